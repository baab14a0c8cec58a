"""The arbitration policies: logged probabilities, the floor, seeding, state round trips,
late rewards, never-seen actions, and the per-arm ridge statistics they share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relevo.learning.bandits import (
    ALGORITHMS,
    BetaThompson,
    EpsilonGreedy,
    LinearThompson,
    LinUCB,
    build_policy,
    load_policy,
)
from relevo.learning.linear import RidgeArms, RidgeModel
from relevo.learning.policy import Policy

DIM = 8
ACTIONS = ["a", "b", "c", "d", "e"]
CLICK_RATE = {"a": 0.1, "b": 0.3, "c": 0.05, "d": 0.2, "e": 0.15}


def context(rng: np.random.Generator) -> np.ndarray:
    """A bias plus a unit-norm random part, shaped like ``FeatureHasher`` output."""
    vector = rng.standard_normal(DIM)
    vector[0] = 0.0
    vector /= np.linalg.norm(vector)
    vector[0] = 1.0
    return vector


def trained(algorithm: str, *, seed: int = 0, rounds: int = 200, **settings: float) -> Policy:
    policy = build_policy(algorithm, dim=DIM, seed=seed, **settings)
    rng = np.random.default_rng(100 + seed)
    for _ in range(rounds):
        x = context(rng)
        served = policy.choose(x, ACTIONS).ranking[0]
        policy.learn_one(x, served, float(rng.random() < CLICK_RATE[served]))
    return policy


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("floor", [0.1, 0.5, 0.0])
def test_probabilities_sum_to_one_and_respect_the_floor(algorithm: str, floor: float) -> None:
    policy = trained(algorithm, floor=floor)
    rng = np.random.default_rng(1)
    for _ in range(20):
        choice = policy.choose(context(rng), ACTIONS)
        assert sorted(choice.ranking) == sorted(ACTIONS)
        assert set(choice.probabilities) == set(choice.scores) == set(ACTIONS)
        assert math.fsum(choice.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
        assert min(choice.probabilities.values()) >= floor / len(ACTIONS) - 1e-12
        assert choice.probabilities[choice.ranking[0]] > 0


def test_deterministic_policies_put_the_rest_of_the_mass_on_the_best() -> None:
    policy = trained("linucb", floor=0.2)
    choice = policy.choose(context(np.random.default_rng(2)), ACTIONS)
    best = max(ACTIONS, key=choice.scores.__getitem__)
    assert choice.probabilities[best] == pytest.approx(0.8 + 0.2 / 5)
    others = [p for action, p in choice.probabilities.items() if action != best]
    assert others == pytest.approx([0.2 / 5] * 4)


def test_epsilon_greedy_splits_ties_and_adds_epsilon() -> None:
    policy = EpsilonGreedy(epsilon=0.1, floor=0.0)
    choice = policy.choose(np.zeros(0), ["x", "y"])  # never seen: a tie
    assert choice.probabilities == {"x": 0.5, "y": 0.5}
    policy.learn_one(np.zeros(0), "x", 1.0)
    choice = policy.choose(np.zeros(0), ["x", "y"])
    assert choice.probabilities == pytest.approx({"x": 0.95, "y": 0.05})
    assert choice.scores == {"x": 1.0, "y": 0.0}


def test_the_rest_of_the_ranking_follows_the_scores() -> None:
    policy = trained("linucb")
    choice = policy.choose(context(np.random.default_rng(3)), ACTIONS)
    rest = choice.ranking[1:]
    assert [choice.scores[a] for a in rest] == sorted(
        (choice.scores[a] for a in rest), reverse=True
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_same_seed_gives_the_same_choices(algorithm: str) -> None:
    runs = [trained(algorithm, seed=seed) for seed in (7, 7, 8)]
    rng = np.random.default_rng(4)
    contexts = [context(rng) for _ in range(30)]
    choices = [[policy.choose(x, ACTIONS) for x in contexts] for policy in runs]
    assert choices[0] == choices[1]
    assert [c.ranking[0] for c in choices[0]] != [c.ranking[0] for c in choices[2]]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_round_trip_through_bytes_continues_identically(algorithm: str) -> None:
    original = trained(algorithm, floor=0.2, alpha=0.3, epsilon=0.1, noise=0.2, ridge=2.0)
    restored = load_policy(algorithm, original.to_bytes())
    assert restored.to_bytes() == original.to_bytes()
    rng = np.random.default_rng(5)
    for _ in range(50):
        x = context(rng)
        first, second = original.choose(x, [*ACTIONS, "new"]), restored.choose(x, [*ACTIONS, "new"])
        assert first == second
        reward = float(rng.random() < 0.2)
        original.learn_one(x, first.ranking[0], reward)
        restored.learn_one(x, second.ranking[0], reward)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reseeding_restarts_the_random_stream_and_keeps_the_learning(algorithm: str) -> None:
    original = trained(algorithm)
    data = original.to_bytes()
    first, second, unseeded = (load_policy(algorithm, data) for _ in range(3))
    first.reseed(42)
    second.reseed(42)
    rng = np.random.default_rng(13)
    contexts = [context(rng) for _ in range(30)]
    runs = [[policy.choose(x, ACTIONS) for x in contexts] for policy in (first, second, unseeded)]
    assert runs[0] == runs[1]
    assert [c.ranking[0] for c in runs[0]] != [c.ranking[0] for c in runs[2]]
    if algorithm in ("epsilon_greedy", "linucb"):  # deterministic scores: the learning is kept
        assert [c.scores for c in runs[0]] == [c.scores for c in runs[2]]


def test_a_round_trip_keeps_the_settings() -> None:
    policy = LinearThompson(DIM, seed=3, floor=0.3, noise=0.5, ridge=4.0, draws=16)
    restored = LinearThompson.from_bytes(policy.to_bytes())
    assert (restored.dim, restored.floor, restored.noise, restored.ridge, restored.draws) == (
        DIM,
        0.3,
        0.5,
        4.0,
        16,
    )
    linucb = LinUCB.from_bytes(LinUCB(DIM, alpha=0.7, ridge=0.5).to_bytes())
    assert (linucb.alpha, linucb.ridge) == (0.7, 0.5)
    greedy = EpsilonGreedy.from_bytes(EpsilonGreedy(epsilon=0.2, floor=0.05).to_bytes())
    assert (greedy.epsilon, greedy.floor) == (0.2, 0.05)
    beta = BetaThompson.from_bytes(BetaThompson(prior=(2.0, 50.0), draws=8).to_bytes())
    assert (beta.prior, beta.draws) == ((2.0, 50.0), 8)


def test_state_of_another_kind_or_garbage_is_refused() -> None:
    data = build_policy("linucb", dim=DIM).to_bytes()
    with pytest.raises(ValueError, match="LinearThompsonState"):
        load_policy("lints", data)
    with pytest.raises(ValueError):
        load_policy("linucb", b"\x00garbage")
    with pytest.raises(ValueError, match="unknown algorithm"):
        load_policy("ucb1", data)
    with pytest.raises(ValueError, match="unknown algorithm 'ucb1'"):
        build_policy("ucb1", dim=DIM)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_late_reward_equals_learning_the_final_reward(algorithm: str) -> None:
    late, direct = (build_policy(algorithm, dim=DIM) for _ in range(2))
    rng = np.random.default_rng(6)
    trials = [
        (context(rng), ACTIONS[rng.integers(5)], float(rng.random() < 0.3)) for _ in range(60)
    ]
    for x, action, reward in trials:
        late.learn_one(x, action, 0.0)
        direct.learn_one(x, action, reward)
    for x, action, reward in trials:
        if reward:
            late.add_reward(x, action, reward)
    x = context(rng)
    late_choice, direct_choice = late.choose(x, ACTIONS), direct.choose(x, ACTIONS)
    assert late_choice.scores == pytest.approx(direct_choice.scores, rel=1e-9, abs=1e-12)


def test_a_late_reward_gives_the_ridge_model_the_same_theta() -> None:
    late, direct = RidgeModel(DIM), RidgeModel(DIM)
    rng = np.random.default_rng(7)
    for _ in range(40):
        x, action, reward = context(rng), ACTIONS[rng.integers(5)], float(rng.random() < 0.3)
        late.learn_one(x, action, 0.0)
        direct.learn_one(x, action, reward)
        if reward:
            late.add_reward(x, action, reward)
    for _ in range(10):
        x = context(rng)
        assert late.predict(x, ACTIONS) == pytest.approx(direct.predict(x, ACTIONS), abs=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_reward_without_a_trial_is_refused(algorithm: str) -> None:
    policy = build_policy(algorithm, dim=DIM)
    with pytest.raises(ValueError, match="no"):
        policy.add_reward(context(np.random.default_rng(8)), "never-shown", 1.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_never_seen_actions_are_chosen_among_the_known(algorithm: str) -> None:
    policy = trained(algorithm)
    rng = np.random.default_rng(9)
    actions = [*ACTIONS, "fresh-1", "fresh-2"]
    served = set()
    for _ in range(300):
        x = context(rng)
        choice = policy.choose(x, actions)
        assert choice.probabilities["fresh-1"] >= 0.1 / len(actions) - 1e-12
        served.add(choice.ranking[0])
        policy.learn_one(x, choice.ranking[0], 0.0)
    assert {"fresh-1", "fresh-2"} <= served
    assert policy.choose(context(rng), ["only-new"]).ranking == ["only-new"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_served_action_is_drawn_with_its_logged_probability(algorithm: str) -> None:
    """Over many draws, each action is served as often as the probabilities logged for it say:
    ``sum(served) - sum(p)`` is within four standard deviations ``sqrt(sum p (1 - p))``."""
    policy = trained(algorithm, rounds=300, floor=0.2)
    rng = np.random.default_rng(10)
    served = dict.fromkeys(ACTIONS, 0.0)
    expected = dict.fromkeys(ACTIONS, 0.0)
    variance = dict.fromkeys(ACTIONS, 0.0)
    for _ in range(3000):
        choice = policy.choose(context(rng), ACTIONS)
        served[choice.ranking[0]] += 1
        for action, p in choice.probabilities.items():
            expected[action] += p
            variance[action] += p * (1 - p)
    for action in ACTIONS:
        assert abs(served[action] - expected[action]) <= 4 * math.sqrt(variance[action]) + 1


def test_inputs_are_checked() -> None:
    policy = LinUCB(DIM)
    with pytest.raises(ValueError, match="length 8"):
        policy.choose(np.ones(DIM + 1), ACTIONS)
    with pytest.raises(ValueError, match="no actions"):
        policy.choose(np.ones(DIM), [])
    with pytest.raises(ValueError, match="distinct"):
        policy.choose(np.ones(DIM), ["a", "a"])
    with pytest.raises(ValueError, match="finite"):
        policy.learn_one(np.ones(DIM), "a", math.nan)
    with pytest.raises(ValueError, match="between 0 and 1"):
        BetaThompson().learn_one(np.zeros(0), "a", 2.0)
    for bad in (
        lambda: LinUCB(0),
        lambda: LinUCB(DIM, floor=1.5),
        lambda: LinUCB(DIM, alpha=-1.0),
        lambda: LinearThompson(DIM, ridge=0.0),
        lambda: LinearThompson(DIM, draws=0),
        lambda: EpsilonGreedy(epsilon=-0.1),
        lambda: BetaThompson(prior=(0.0, 1.0)),
    ):
        with pytest.raises(ValueError):
            bad()


def test_beta_thompson_refuses_more_rewards_than_failures() -> None:
    policy = BetaThompson()
    policy.learn_one(np.zeros(0), "a", 0.0)
    policy.add_reward(np.zeros(0), "a", 1.0)
    with pytest.raises(ValueError, match="no failed trial"):
        policy.add_reward(np.zeros(0), "a", 1.0)


@pytest.mark.parametrize("asked", [3, 40])
def test_ridge_arms_match_a_direct_ridge_solution(asked: int) -> None:
    """Sherman-Morrison updates give the closed-form ridge solution, whether few of many arms
    are scored (a gather of their matrices) or most of them (one product over all arms)."""
    dim, ridge, arms = 5, 2.0, [f"arm-{i}" for i in range(40)]
    model = RidgeArms(dim, ridge)
    rng = np.random.default_rng(11)
    trials: dict[str, list[tuple[np.ndarray, float]]] = {arm: [] for arm in arms}
    for _ in range(400):
        x, arm, reward = rng.standard_normal(dim), arms[rng.integers(len(arms))], rng.random()
        model.learn_one(x, arm, reward)
        trials[arm].append((x, reward))
    x = rng.standard_normal(dim)
    chosen = arms[-asked:]
    rows = model.rows(chosen)
    means, widths = model.means(rows, x), model.widths(rows, x)
    for arm, mean, width in zip(chosen, means, widths, strict=True):
        a = ridge * np.eye(dim) + sum(
            (np.outer(v, v) for v, _ in trials[arm]), np.zeros((dim, dim))
        )
        b = sum((r * v for v, r in trials[arm]), np.zeros(dim))
        assert mean == pytest.approx(np.linalg.solve(a, b) @ x, rel=1e-9, abs=1e-12)
        assert width == pytest.approx(x @ np.linalg.solve(a, x), rel=1e-9)


def test_the_ridge_model_learns_each_actions_linear_reward() -> None:
    rng = np.random.default_rng(12)
    weights = {"a": rng.standard_normal(DIM), "b": rng.standard_normal(DIM)}
    model = RidgeModel(DIM, ridge=0.1)
    for _ in range(500):
        x = context(rng)
        for action, w in weights.items():
            model.learn_one(x, action, float(w @ x))
    x = context(rng)
    predicted = model.predict(x, ["a", "b", "unseen"])
    assert predicted["a"] == pytest.approx(weights["a"] @ x, abs=1e-2)
    assert predicted["b"] == pytest.approx(weights["b"] @ x, abs=1e-2)
    assert predicted["unseen"] == 0.0
    restored = RidgeModel.from_bytes(model.to_bytes())
    assert restored.predict(x, ["a", "b"]) == model.predict(x, ["a", "b"])
    with pytest.raises(ValueError):
        RidgeModel.from_bytes(LinUCB(DIM).to_bytes())
