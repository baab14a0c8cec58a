"""Off-policy evaluation on the real Open Bandit Dataset sample that obp ships.

Needs the sample installed (``pip install --no-deps --ignore-requires-python obp==0.5.7``):
without it the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from relevo.decisions.evaluate import EvaluationReport, PolicySpec, evaluate
from relevo.decisions.log import LoggedDecision
from relevo.learning import obd
from relevo.learning.features import FeatureHasher

ROWS = 10_000
ITEMS = 80


def sample(campaign: str) -> Path:
    """The installed sample's directory, or a skip (a failure under CI=true) without it."""
    try:
        return obd.locate(campaign)
    except FileNotFoundError as exc:
        reason = str(exc)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def random_all() -> list[LoggedDecision]:
    return list(obd.read_campaign(sample("random/all")))


@pytest.fixture(scope="module")
def lints_report(random_all: list[LoggedDecision]) -> EvaluationReport:
    return evaluate(random_all, PolicySpec("lints"), hasher=FeatureHasher(64))


# epsilon-greedy exploring all the time is the uniform-random logger of the random campaigns
UNIFORM = PolicySpec("epsilon_greedy", {"epsilon": 1.0})


def test_the_csv_has_the_columns_the_reader_expects() -> None:
    directory = sample("random/all")
    with (directory / "all.csv").open(newline="") as file:
        header = next(csv.reader(file))
    assert header[:10] == [
        "", "timestamp", "item_id", "position", "click", "propensity_score",
        "user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3",
    ]  # fmt: skip
    assert header[10:] == [f"user-item_affinity_{i}" for i in range(ITEMS)]
    assert obd.read_items(directory) == [str(i) for i in range(ITEMS)]


def test_random_all_reads_as_ten_thousand_logged_decisions(
    random_all: list[LoggedDecision],
) -> None:
    assert len(random_all) == ROWS
    times = [d.record.at for d in random_all]
    assert times == sorted(times) and times[0].tzinfo is not None
    positions = {d.record.chosen[0].position for d in random_all}
    assert positions == {0, 1, 2}
    first = random_all[0].record
    assert first.placement == "obd_all" and first.policy == "obd:random"
    assert len(first.candidates) == ITEMS
    assert sum(name.startswith("user_feature_") for name in first.features) == 4
    for decision in random_all:
        (chosen,) = decision.record.chosen
        assert chosen.probability == 1 / ITEMS  # uniform over 80 items
        assert decision.record.probabilities == {chosen.offer: chosen.probability}
        assert decision.clicks <= {chosen.offer}
    clicks = sum(1 for d in random_all if d.clicks)
    assert 0.001 < clicks / ROWS < 0.01  # about 0.4 %


def test_the_bts_log_has_unequal_propensities() -> None:
    propensities = [d.record.chosen[0].probability for d in obd.read_campaign(sample("bts/all"))]
    assert len(propensities) == ROWS
    assert 0 < min(propensities) < 1e-3 and max(propensities) < 1


def test_ips_of_the_logging_policy_is_its_own_click_rate(
    random_all: list[LoggedDecision],
) -> None:
    report = evaluate(random_all, UNIFORM, hasher=FeatureHasher(8))
    ips, snips, _ = report.estimates
    assert report.test.decisions == 3000 and report.logged.matched == report.test.rewards
    assert ips.value == pytest.approx(report.logged.value, rel=1e-12)
    assert snips.value == pytest.approx(report.logged.value, rel=1e-12)
    assert ips.ess == pytest.approx(3000)


def test_a_relevo_policy_gets_a_finite_doubly_robust_estimate(
    lints_report: EvaluationReport,
) -> None:
    dr = {e.estimator: e for e in lints_report.estimates}["DR"]
    assert math.isfinite(dr.value) and math.isfinite(dr.ess) and dr.ess > 0
    assert dr.interval.low <= dr.value <= dr.interval.high
    assert math.isfinite(dr.interval.low) and math.isfinite(dr.interval.high)
    # about 10 test clicks: the interval is the exact-style one, and wide
    assert dr.interval.method == "normal+poisson"
    assert dr.interval.high - dr.interval.low > 2 * lints_report.logged.value


def test_relevo_ope_on_the_sample() -> None:
    from relevo.cli.ope import ope

    sample("random/all")
    result = CliRunner().invoke(ope, ["--obd", "random/all", "--policy", "thompson", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["placement"] == "obd_all" and report["logged_by"] == ["obd:random"]
    assert [e["estimator"] for e in report["estimates"]] == ["logged", "IPS", "SNIPS", "DR"]
