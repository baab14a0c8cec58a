"""The bandits learn in simulated environments with known click rates (seeded, so exact).

Regret is measured on the logged distribution: ``best rate - sum(p_a * rate_a)`` each round, the
expected regret of what the policy would serve, which is far less noisy than the realised one.

These click rates (0.05 to 0.3) give rewards with a standard deviation of about 0.45, so the
linear bandits get exploration on that scale (``alpha = 1``, ``noise = 0.45``); the defaults
(0.1) suit click rates around 1 %, whose standard deviation is about 0.1.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from relevo.learning.bandits import build_policy
from relevo.learning.features import FeatureHasher

DISTRACTORS = {"C": 0.05, "D": 0.08, "E": 0.12, "F": 0.15, "G": 0.02, "H": 0.1}
RATES = {
    "s1": {"A": 0.3, "B": 0.1, **DISTRACTORS},
    "s2": {"A": 0.1, "B": 0.3, **DISTRACTORS},
}
BEST = {"s1": "A", "s2": "B"}
OFFERS = list(RATES["s1"])
ROUNDS, BLOCK = 3000, 300


@pytest.mark.parametrize(
    ("algorithm", "exploration"),
    [("linucb", {"alpha": 1.0}), ("lints", {"noise": 0.45})],
)
def test_contextual_bandits_learn_the_best_offer_of_each_segment(
    algorithm: str, exploration: dict[str, float]
) -> None:
    hasher = FeatureHasher(16)
    contexts = {segment: hasher.transform({f"segment={segment}": 1.0}) for segment in RATES}
    assert not np.array_equal(contexts["s1"], contexts["s2"])
    policy = build_policy(algorithm, dim=16, seed=0, **exploration)
    rng = np.random.default_rng(1)
    regret: list[float] = []
    served_last: dict[str, Counter[str]] = {segment: Counter() for segment in RATES}
    for round_ in range(ROUNDS):
        segment = "s1" if rng.random() < 0.5 else "s2"
        rates = RATES[segment]
        choice = policy.choose(contexts[segment], OFFERS)
        regret.append(
            max(rates.values()) - sum(p * rates[a] for a, p in choice.probabilities.items())
        )
        served = choice.ranking[0]
        policy.learn_one(contexts[segment], served, float(rng.random() < rates[served]))
        if round_ >= ROUNDS - BLOCK:
            served_last[segment][served] += 1
    first, last = np.mean(regret[:BLOCK]), np.mean(regret[-BLOCK:])
    assert last < first / 3
    assert {segment: counts.most_common(1)[0][0] for segment, counts in served_last.items()} == BEST


@pytest.mark.parametrize("algorithm", ["epsilon_greedy", "thompson"])
def test_non_contextual_bandits_find_the_best_offer(algorithm: str) -> None:
    rates = {"A": 0.3, "B": 0.2, "C": 0.1, "D": 0.05, "E": 0.15}
    policy = build_policy(algorithm, dim=1, seed=0)
    rng = np.random.default_rng(2)
    no_context = np.zeros(0)
    best_probability: list[float] = []
    served_last: Counter[str] = Counter()
    for round_ in range(2000):
        choice = policy.choose(no_context, list(rates))
        best_probability.append(choice.probabilities["A"])
        served = choice.ranking[0]
        policy.learn_one(no_context, served, float(rng.random() < rates[served]))
        if round_ >= 2000 - BLOCK:
            served_last[served] += 1
    # the exploration left (the floor, and epsilon) caps it near 0.9
    assert np.mean(best_probability[-BLOCK:]) > 0.8
    assert served_last.most_common(1)[0][0] == "A"
