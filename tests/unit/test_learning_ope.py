"""Off-policy evaluation: the estimators against simulated logs with a known truth, and the
evaluation of a candidate policy on a decision log (``relevo ope``)."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from relevo.decisions.evaluate import PolicySpec, evaluate
from relevo.decisions.log import Chosen, DecisionRecord, LoggedDecision
from relevo.learning.features import FeatureHasher
from relevo.learning.ope import (
    EstimatorOptions,
    Rounds,
    doubly_robust,
    effective_sample_size,
    estimate_all,
    gamma_quantile,
    ips,
    on_policy,
    render_table,
    snips,
    weights,
)

# -- a simulated environment: 3 contexts, 4 actions, known click rates ---------------------------

RATES = np.array([[0.10, 0.30, 0.05, 0.20], [0.25, 0.05, 0.15, 0.10], [0.05, 0.10, 0.40, 0.20]])
LOGGING = np.array([[0.4, 0.2, 0.2, 0.2], [0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25]])
TARGET = np.array([[0.1, 0.7, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.85, 0.05]])


def truth(rates: np.ndarray, target: np.ndarray) -> float:
    """The target policy's expected reward, contexts uniform."""
    return float(np.mean(np.sum(target * rates, axis=1)))


def simulate(
    rng: np.random.Generator,
    n: int,
    rates: np.ndarray = RATES,
    target: np.ndarray = TARGET,
    model: np.ndarray | None = None,
) -> Rounds:
    """n rounds logged by LOGGING; ``model`` (default: a flat, wrong one) predicts for DR."""
    contexts = rng.integers(0, len(rates), n)
    cumulative = np.cumsum(LOGGING[contexts], axis=1)
    actions = (rng.random((n, 1)) > cumulative).sum(axis=1)
    rewards = (rng.random(n) < rates[contexts, actions]).astype(float)
    q = np.full_like(rates, 0.15) if model is None else model
    return Rounds.of(
        rewards=rewards,
        propensities=LOGGING[contexts, actions],
        target=target[contexts, actions],
        predicted=q[contexts, actions],
        expected=np.sum(target[contexts] * q[contexts], axis=1),
    )


def covers(low: float, high: float, value: float) -> bool:
    return low <= value <= high


# -- the estimators ----------------------------------------------------------------------------


def test_the_intervals_cover_the_true_value_of_the_target_policy() -> None:
    rng = np.random.default_rng(7)
    value = truth(RATES, TARGET)
    found: dict[str, list[float]] = {"IPS": [], "SNIPS": [], "DR": []}
    hits = dict.fromkeys(found, 0)
    replications = 300
    for _ in range(replications):
        for estimate in estimate_all(simulate(rng, 2000)):
            assert estimate.interval.method in {"normal", "delta"}  # rewards are plentiful
            found[estimate.estimator].append(estimate.value)
            hits[estimate.estimator] += covers(estimate.interval.low, estimate.interval.high, value)
    for name, values in found.items():
        coverage = hits[name] / replications
        assert 0.90 <= coverage <= 0.99, (name, coverage)
        # unbiased (SNIPS nearly): the mean of the estimates is within noise of the truth
        assert abs(np.mean(values) - value) < 3 * np.std(values) / math.sqrt(replications), name


def test_with_rare_clicks_the_interval_is_poisson_and_still_covers() -> None:
    rng = np.random.default_rng(11)
    rates = RATES / 50  # click rates of 0.1-0.8 %
    value = truth(rates, TARGET)
    poisson_hits = normal_hits = 0
    replications = 400
    for _ in range(replications):
        rounds = simulate(rng, 1500, rates)
        estimate = ips(rounds)
        assert estimate.interval.method == "poisson"
        poisson_hits += covers(estimate.interval.low, estimate.interval.high, value)
        terms = weights(rounds) * rounds.rewards
        half = 1.96 * terms.std(ddof=1) / math.sqrt(rounds.n)
        normal_hits += covers(terms.mean() - half, terms.mean() + half, value)
    assert poisson_hits / replications >= 0.94
    assert normal_hits < poisson_hits  # the normal approximation is too narrow here


def test_zero_matched_clicks_still_give_an_upper_bound() -> None:
    n = 1000
    rounds = Rounds.of(np.zeros(n), np.full(n, 0.25), np.full(n, 0.5))
    estimate = ips(rounds)
    assert (estimate.value, estimate.matched, estimate.effective_matched) == (0.0, 0, 0.0)
    assert estimate.interval.method == "poisson"
    # the exact Poisson upper bound for 0 events, -ln(0.025), at the largest weight (2)
    assert estimate.interval.low == 0.0
    assert estimate.interval.high == pytest.approx(-math.log(0.025) * 2 / n, rel=1e-9)


def test_one_matched_click_is_not_a_narrow_interval() -> None:
    n = 3000
    rewards = np.zeros(n)
    rewards[5] = 1.0
    rounds = Rounds.of(rewards, np.full(n, 1 / 80), np.full(n, 1 / 80))
    estimate = ips(rounds)
    assert estimate.value == pytest.approx(1 / n)
    # exact Poisson bounds for one event: 0.0253 and 5.572
    assert estimate.interval.low * n == pytest.approx(0.02532, rel=1e-3)
    assert estimate.interval.high * n == pytest.approx(5.5716, rel=1e-3)


def test_snips_equals_ips_when_the_weights_average_one() -> None:
    rng = np.random.default_rng(3)
    rewards = (rng.random(400) < 0.3).astype(float)
    same = Rounds.of(rewards, np.full(400, 0.2), np.full(400, 0.2))
    assert snips(same).value == pytest.approx(ips(same).value)
    assert ips(same).value == pytest.approx(rewards.mean())
    # weights 0.5 and 1.5 in equal numbers also average 1
    target = np.where(np.arange(400) % 2 == 0, 0.1, 0.3)
    balanced = Rounds.of(rewards, np.full(400, 0.2), target)
    assert float(np.mean(weights(balanced))) == pytest.approx(1.0)
    assert snips(balanced).value == pytest.approx(ips(balanced).value)


def test_doubly_robust_with_a_perfect_model_has_lower_variance() -> None:
    # rewards that depend mostly on the action: IPS's variance is then mostly which actions
    # the logger happened to choose, which a perfect reward model removes
    rates = np.array([[0.02, 0.95, 0.02, 0.6], [0.9, 0.02, 0.3, 0.02], [0.02, 0.1, 0.95, 0.5]])
    rng = np.random.default_rng(5)
    value = truth(rates, TARGET)
    ips_values, dr_values, ips_widths, dr_widths = [], [], [], []
    for _ in range(200):
        rounds = simulate(rng, 1000, rates, model=rates)
        by_ips, by_dr = ips(rounds), doubly_robust(rounds)
        ips_values.append(by_ips.value)
        dr_values.append(by_dr.value)
        ips_widths.append(by_ips.interval.high - by_ips.interval.low)
        dr_widths.append(by_dr.interval.high - by_dr.interval.low)
    assert np.std(dr_values) < 0.6 * np.std(ips_values)
    assert np.mean(dr_widths) < 0.6 * np.mean(ips_widths)
    assert abs(np.mean(dr_values) - value) < 3 * np.std(dr_values) / math.sqrt(200)


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size(np.array([3.0, 0.0, 0.0, 0.0])) == pytest.approx(1)
    assert effective_sample_size(np.array([1.0, 2.0, 3.0])) == pytest.approx(36 / 14)
    assert effective_sample_size(np.zeros(3)) == 0.0


def test_clipping_caps_the_weights_and_is_off_by_default() -> None:
    rng = np.random.default_rng(9)
    rounds = simulate(rng, 2000)
    raw = weights(rounds)
    assert raw.max() == pytest.approx(0.7 / 0.1)  # no clipping unless asked
    clipped = weights(rounds, EstimatorOptions(max_weight=2.0))
    assert clipped.max() == 2.0
    assert np.array_equal(clipped, np.minimum(raw, 2.0))
    # with rewards >= 0, clipping can only lower IPS; a cap above every weight changes nothing
    assert ips(rounds, EstimatorOptions(max_weight=2.0)).value < ips(rounds).value
    assert ips(rounds, EstimatorOptions(max_weight=10.0)).value == ips(rounds).value


def test_a_low_effective_sample_is_flagged() -> None:
    n = 1000
    target = np.zeros(n)
    target[:10] = 1.0  # ten rounds carry all the weight
    rewards = np.zeros(n)
    rewards[:3] = 1.0
    estimate = ips(Rounds.of(rewards, np.full(n, 0.5), target))
    assert estimate.ess == pytest.approx(10) and estimate.low_ess
    table = render_table([estimate])
    assert "10.0!" in table and "rests on a few logged rounds" in table
    assert not ips(Rounds.of(rewards, np.full(n, 0.5), np.full(n, 0.5))).low_ess


def test_on_policy_uses_the_wilson_interval() -> None:
    estimate = on_policy(np.zeros(10))
    assert estimate.value == 0.0
    assert estimate.interval.method == "wilson"
    assert estimate.interval.low == pytest.approx(0.0, abs=1e-12)
    assert estimate.interval.high == pytest.approx(0.2775, abs=1e-4)
    half = on_policy(np.array([0.0, 1.0] * 50))
    assert half.interval.low == pytest.approx(0.4038, abs=1e-4)
    assert half.interval.high == pytest.approx(0.5962, abs=1e-4)


def test_gamma_quantiles() -> None:
    assert gamma_quantile(1.0, 0.975) == pytest.approx(-math.log(0.025), rel=1e-9)
    # exact Poisson bounds for 3 events: chi2(0.025, 6) / 2 and chi2(0.975, 8) / 2
    assert gamma_quantile(3.0, 0.025) == pytest.approx(0.6187, abs=1e-4)
    assert gamma_quantile(4.0, 0.975) == pytest.approx(8.7673, abs=1e-4)
    assert 2 * gamma_quantile(0.5, 0.5) == pytest.approx(0.4549, abs=1e-4)  # chi2, 1 df
    assert gamma_quantile(500.0, 0.5) == pytest.approx(499.667, abs=1e-3)


def test_rounds_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Rounds.of([1.0], [0.5], [0.5])
    with pytest.raises(ValueError, match="one value per"):
        Rounds.of([1.0, 0.0], [0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="positive"):
        Rounds.of([1.0, 0.0], [0.5, 0.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="both predicted and expected"):
        Rounds.of([1.0, 0.0], [0.5, 0.5], [0.5, 0.5], predicted=[0.1, 0.1])
    with pytest.raises(ValueError, match="level"):
        EstimatorOptions(level=1.0)


def test_a_candidate_that_never_agrees_with_the_logger() -> None:
    rounds = Rounds.of([1.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0])
    assert ips(rounds).value == 0.0 and ips(rounds).matched == 0
    assert math.isnan(snips(rounds).value) and snips(rounds).interval.method == "undefined"


# -- evaluating a candidate on a decision log ------------------------------------------------

OFFERS = ["a", "b", "c", "d", "e"]
START = datetime(2025, 3, 1, tzinfo=UTC)


def segment_rate(segment: str, offer: str) -> float:
    """Segment s0 clicks offer a, s1 clicks b; everything else rarely."""
    return 0.3 if (segment, offer) in {("s0", "a"), ("s1", "b")} else 0.02


def uniform_log(n: int, seed: int = 1, placement: str = "home") -> list[LoggedDecision]:
    """A placement's log under a uniformly random logging policy."""
    rng = np.random.default_rng(seed)
    logged = []
    for i in range(n):
        segment = f"s{rng.integers(0, 2)}"
        offer = OFFERS[rng.integers(0, len(OFFERS))]
        probability = 1 / len(OFFERS)
        record = DecisionRecord(
            id=f"d{i}",
            at=START + timedelta(minutes=i),
            placement=placement,
            profile_id=f"p{i}",
            policy="bandit:random",
            features={f"segment={segment}": 1.0},
            candidates=OFFERS,
            probabilities=dict.fromkeys(OFFERS, probability),
            chosen=[Chosen(offer, 0, probability, 0.0)],
        )
        clicked = rng.random() < segment_rate(segment, offer)
        logged.append(
            LoggedDecision(
                record=record,
                impressions=frozenset({offer}),
                clicks=frozenset({offer}) if clicked else frozenset(),
            )
        )
    return logged


# epsilon-greedy exploring all the time is the uniform logger itself
UNIFORM = PolicySpec("epsilon_greedy", {"epsilon": 1.0})


def test_a_learning_policy_beats_a_random_logger_where_the_signal_is_strong() -> None:
    logged = uniform_log(4000)
    report = evaluate(logged, PolicySpec("linucb", {"alpha": 0.01}), hasher=FeatureHasher(16))
    assert (report.train.decisions, report.test.decisions) == (2800, 1200)
    assert report.train.end < report.test.start
    assert report.placement == "home" and report.logged_by == ["bandit:random"]
    dr = {e.estimator: e for e in report.estimates}["DR"]
    # the logger earns about (0.3 + 4 * 0.02) / 5 = 7.6 %; knowing the segments, about 27 %
    assert report.logged.interval.high < dr.interval.low
    assert 0.2 < dr.value < 0.34
    assert dr.interval.method == "normal" and not dr.low_ess


def test_the_logger_evaluated_on_its_own_log_reproduces_its_click_rate() -> None:
    report = evaluate(uniform_log(1000), UNIFORM, hasher=FeatureHasher(8))
    by_ips, by_snips, by_dr = report.estimates
    assert by_ips.value == pytest.approx(report.logged.value, rel=1e-12)
    assert by_snips.value == pytest.approx(report.logged.value, rel=1e-12)
    assert by_ips.ess == pytest.approx(report.test.decisions)
    # DR adds its model part, whose mean is zero only in expectation
    assert by_dr.interval.low < report.logged.value < by_dr.interval.high


def test_the_log_is_split_by_time_whatever_its_order() -> None:
    logged = uniform_log(200)
    forward = evaluate(logged, PolicySpec("thompson"), hasher=FeatureHasher(8), seed=3)
    backward = evaluate(logged[::-1], PolicySpec("thompson"), hasher=FeatureHasher(8), seed=3)
    assert forward.to_dict() == backward.to_dict()


def test_decisions_without_a_served_offer_are_skipped() -> None:
    logged = uniform_log(100)
    empty = logged[0].record
    nothing = LoggedDecision(
        record=DecisionRecord(
            id="none", at=empty.at, placement="home", profile_id=None, policy="priority"
        )
    )
    report = evaluate([*logged, nothing], UNIFORM, hasher=FeatureHasher(8))
    assert report.skipped == 1
    assert report.train.decisions + report.test.decisions == 100


def test_deterministic_decisions_are_pointed_out() -> None:
    def served_for_sure(decision: LoggedDecision) -> LoggedDecision:
        record = decision.record
        offer = record.chosen[0].offer
        sure = msgspec.structs.replace(
            record, policy="priority", chosen=[Chosen(offer, 0, 1.0, 0.0)], probabilities={}
        )
        return msgspec.structs.replace(decision, record=sure)

    report = evaluate(
        [served_for_sure(d) for d in uniform_log(100)], UNIFORM, hasher=FeatureHasher(8)
    )
    assert report.deterministic == report.test.decisions == 30
    assert "30 test decisions were made deterministically" in report.table()
    assert evaluate(uniform_log(100), UNIFORM, hasher=FeatureHasher(8)).deterministic == 0


def test_too_short_a_log_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 each"):
        evaluate(uniform_log(3), UNIFORM, hasher=FeatureHasher(8))
    with pytest.raises(ValueError, match="train_fraction"):
        evaluate(uniform_log(30), UNIFORM, hasher=FeatureHasher(8), train_fraction=1.0)


# -- relevo ope -------------------------------------------------------------------------------


class ListReader:
    """A decision log held in memory (the store's ``DecisionLogReader``)."""

    def __init__(self, logged: list[LoggedDecision]) -> None:
        self.decisions = logged
        self.asked: list[tuple[str, datetime | None, datetime | None]] = []

    def logged(
        self, placement: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[LoggedDecision]:
        self.asked.append((placement, since, until))
        return (
            d
            for d in self.decisions
            if d.record.placement == placement
            and (since is None or d.record.at >= since)
            and (until is None or d.record.at < until)
        )


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> ListReader:
    # the module, not the command it defines (``relevo.cli.ope`` names the command too)
    command = importlib.import_module("relevo.cli.ope")
    found = ListReader(uniform_log(600) + uniform_log(50, seed=2, placement="other"))

    @contextmanager
    def open_decision_log(store_url: str | None) -> Iterator[ListReader]:
        yield found

    monkeypatch.setattr(command, "open_decision_log", open_decision_log)
    return found


def run_ope(*args: str) -> Any:
    from relevo.cli.ope import ope

    return CliRunner().invoke(ope, list(args))


def test_relevo_ope_prints_the_estimates_of_a_placement(reader: ListReader) -> None:
    result = run_ope("--placement", "home", "--policy", "linucb", "--alpha", "0.05")
    assert result.exit_code == 0, result.output
    assert reader.asked == [("home", None, None)]
    assert "linucb(alpha=0.05) on home" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("estimator"))
    assert [line.split()[0] for line in lines[header : header + 5]] == [
        "estimator",
        "logged",
        "IPS",
        "SNIPS",
        "DR",
    ]


def test_relevo_ope_reads_the_time_range_and_writes_json(reader: ListReader) -> None:
    since = START + timedelta(minutes=100)
    result = run_ope(
        "--placement", "home", "--since", since.isoformat(), "--until", "2025-03-01T08:00",
        "--json", "--policy", "thompson",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert reader.asked == [("home", since, datetime(2025, 3, 1, 8, tzinfo=UTC))]
    report = json.loads(result.output)
    assert report["train"]["decisions"] + report["test"]["decisions"] == 380
    assert [e["estimator"] for e in report["estimates"]] == ["logged", "IPS", "SNIPS", "DR"]


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--placement", "home", "--obd", "random/all"),
        ("--obd", "random/all", "--since", "2025-01-01"),
    ],
)
def test_relevo_ope_needs_one_source(reader: ListReader, args: tuple[str, ...]) -> None:
    result = run_ope(*args)
    assert result.exit_code == 2 and "--placement" in result.output


def test_relevo_ope_reports_a_log_too_short(reader: ListReader) -> None:
    result = run_ope("--placement", "nowhere")
    assert result.exit_code == 1 and "at least 2 each" in result.output
