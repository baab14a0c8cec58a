"""Experiments and the holdout: valid definitions, sticky and proportional assignment,
an independent holdout, and the statistics of results checked against published values."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest

from relevo.decisions.experiments import (
    Experiment,
    Uplift,
    Variant,
    assign,
    in_holdout,
    rate_interval,
    uplift,
)
from relevo.errors import ValidationError

UNITS = [f"user-{i}" for i in range(100_000)]
DEFINITION: dict[str, Any] = {
    "id": "hero-test",
    "placement": "home_hero",
    "variants": [
        {"name": "control", "weight": 50},
        {"name": "bandit", "weight": 30, "arbitration": "bandit"},
        {"name": "pvl", "weight": 20, "arbitration": "pvl", "offers": ["a", "b"]},
    ],
}


def experiment(**changes: Any) -> Experiment:
    return msgspec.convert({**DEFINITION, **changes}, Experiment)


def chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


# -- definitions ---------------------------------------------------------------------------


def test_a_definition_decodes_from_json_with_its_defaults() -> None:
    e = experiment()
    assert [v.name for v in e.variants] == ["control", "bandit", "pvl"]
    assert e.variants[1] == Variant(name="bandit", weight=30.0, arbitration="bandit")
    assert e.variants[2].offers == ["a", "b"]
    assert e.salt is None and e.bucket_salt == "hero-test"
    assert experiment(salt="reshuffled").bucket_salt == "reshuffled"
    assert msgspec.json.decode(msgspec.json.encode(e), type=Experiment) == e


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        experiment(owner="me")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        experiment(**pair(a={"share": 2}))


def pair(a: dict[str, Any] | None = None, b: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two valid variants, with changes."""
    return {
        "variants": [
            {"name": "a", "weight": 1, **(a or {})},
            {"name": "b", "weight": 1, **(b or {})},
        ]
    }


@pytest.mark.parametrize(
    ("changes", "location"),
    [
        ({"id": "Hero Test"}, "id"),
        ({"id": ""}, "id"),
        ({"placement": ""}, "placement"),
        ({"salt": ""}, "salt"),
        ({"variants": [{"name": "only", "weight": 1}]}, "variants"),
        ({"variants": []}, "variants"),
        (pair(b={"name": "a"}), "variants[1].name"),
        (pair(b={"name": "B"}), "variants[1].name"),
        (pair(a={"name": "holdout"}), "variants[0].name"),
        (pair(a={"weight": 0}), "variants[0].weight"),
        (pair(b={"weight": -2}), "variants[1].weight"),
        (pair(b={"weight": math.inf}), "variants[1].weight"),
        (pair(a={"arbitration": ""}), "variants[0].arbitration"),
        (pair(a={"offers": ["x", "x"]}), "variants[0].offers"),
        ({"start": "2025-01-01T00:00:00"}, "start"),
        ({"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end"),
        ({"start": "2025-02-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}, "end"),
    ],
)
def test_an_invalid_definition_names_the_field(changes: dict[str, Any], location: str) -> None:
    with pytest.raises(ValidationError) as caught:
        experiment(**changes)
    assert caught.value.details[0].location == location
    assert caught.value.details[0].code == "invalid_experiment"
    assert caught.value.message.startswith("experiment ")


def test_every_problem_is_reported_at_once_and_direct_construction_validates_too() -> None:
    with pytest.raises(ValidationError) as caught:
        Experiment(
            id="x",
            placement="p",
            variants=[Variant(name="a", weight=0), Variant(name="a", weight=True)],
        )
    assert [d.location for d in caught.value.details] == [
        "variants[0].weight",
        "variants[1].name",
        "variants[1].weight",
    ]


def test_an_experiment_is_active_from_start_until_end() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    e = experiment(start="2025-01-01T00:00:00Z", end="2025-02-01T00:00:00Z")
    assert not e.active(start - timedelta(seconds=1))
    assert e.active(start)
    assert e.active(datetime(2025, 1, 31, 23, 59, tzinfo=UTC))
    assert not e.active(datetime(2025, 2, 1, tzinfo=UTC))
    assert experiment().active(start)


# -- assignment ----------------------------------------------------------------------------


def test_assignment_is_sticky_across_calls_and_freshly_built_definitions() -> None:
    first = experiment()
    again = msgspec.convert(msgspec.to_builtins(first), Experiment)
    for unit in UNITS[:2000]:
        variant = assign(first, unit)
        assert assign(first, unit) is variant
        assert assign(again, unit) == variant


def test_assignment_is_the_same_in_every_process() -> None:
    # pinned: a hash seeded per process (Python's hash) or a changed scheme would break these
    e = experiment()
    assigned = {
        u: assign(e, u).name for u in ("user-1", "user-2", "user-4", "anon-abc", "ü-nicode")
    }
    assert assigned == {
        "user-1": "bandit",
        "user-2": "control",
        "user-4": "pvl",
        "anon-abc": "bandit",
        "ü-nicode": "pvl",
    }
    assert [in_holdout(u, 10) for u in ("user-1", "user-2", "user-3")] == [True, False, False]


def test_units_split_in_proportion_to_the_weights() -> None:
    e = experiment()
    counts = Counter(assign(e, unit).name for unit in UNITS)
    observed = [counts["control"], counts["bandit"], counts["pvl"]]
    expected = [0.5 * len(UNITS), 0.3 * len(UNITS), 0.2 * len(UNITS)]
    # 2 degrees of freedom: 13.8 is the 0.1 % critical value; the units are fixed, so this is
    # deterministic, and a biased mapping (say off by 1 %) lands far above it
    assert chi_square(observed, expected) < 13.8, observed


def test_weights_need_not_sum_to_anything_in_particular() -> None:
    fractional = experiment(
        variants=[
            {"name": "a", "weight": 0.1},
            {"name": "b", "weight": 0.1},
            {"name": "c", "weight": 0.2},
        ]
    )
    scaled = experiment(
        variants=[
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1},
            {"name": "c", "weight": 2},
        ]
    )
    assert all(assign(fractional, u).name == assign(scaled, u).name for u in UNITS[:5000])


def test_the_salt_decides_the_shuffle() -> None:
    same_salt = experiment(id="renamed", salt="hero-test")
    assert all(assign(same_salt, u) == assign(experiment(), u) for u in UNITS[:2000])
    two = [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
    one, other = experiment(variants=two), experiment(variants=two, id="other-test")
    moved = sum(assign(one, u).name != assign(other, u).name for u in UNITS[:10_000])
    assert 4_700 < moved < 5_300  # independent experiments: half the units differ


# -- holdout ------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [1, 5, 10, 50])
def test_the_holdout_takes_its_share_of_units(percent: float) -> None:
    held = sum(in_holdout(u, percent) for u in UNITS)
    expected = percent / 100 * len(UNITS)
    sd = math.sqrt(len(UNITS) * percent / 100 * (1 - percent / 100))
    assert abs(held - expected) < 4 * sd


def test_no_holdout_and_a_full_holdout() -> None:
    assert not any(in_holdout(u, 0) for u in UNITS[:5000])
    assert all(in_holdout(u, 100) for u in UNITS[:5000])
    with pytest.raises(ValidationError):
        in_holdout("u", 101)
    with pytest.raises(ValidationError):
        in_holdout("u", -1)


def test_the_holdout_is_independent_of_the_variant_a_unit_would_get() -> None:
    e = experiment()
    table = Counter((in_holdout(u, 20), assign(e, u).name) for u in UNITS)
    names = ["control", "bandit", "pvl"]
    observed = [table[(held, name)] for held in (True, False) for name in names]
    rows = [sum(table[(held, n)] for n in names) for held in (True, False)]
    columns = [sum(table[(h, name)] for h in (True, False)) for name in names]
    expected = [r * c / len(UNITS) for r in rows for c in columns]
    # (2 - 1) * (3 - 1) = 2 degrees of freedom: 13.8 is the 0.1 % critical value
    assert chi_square(observed, expected) < 13.8
    held_share = {name: table[(True, name)] / columns[i] for i, name in enumerate(names)}
    assert all(abs(share - 0.2) < 0.01 for share in held_share.values()), held_share


def test_a_different_holdout_salt_is_a_different_holdout() -> None:
    default = {u for u in UNITS[:20_000] if in_holdout(u, 10)}
    other = {u for u in UNITS[:20_000] if in_holdout(u, 10, salt="another")}
    overlap = len(default & other) / len(default)
    assert 0.08 < overlap < 0.12  # about 10 % of one holdout is in the other, by chance


# -- results: Wilson score interval --------------------------------------------------------

# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (score, no continuity
# correction); and Wilson intervals commonly tabulated for 0/10, 5/10 and 50/100.
PUBLISHED_WILSON = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (50, 100, 0.4038, 0.5962),
]


@pytest.mark.parametrize(("successes", "trials", "low", "high"), PUBLISHED_WILSON)
def test_wilson_interval_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    rate, got_low, got_high = rate_interval(successes, trials)
    assert rate == successes / trials
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_edges() -> None:
    assert rate_interval(0, 50)[1] == 0.0
    assert rate_interval(50, 50)[2] == 1.0
    rate, low, high = rate_interval(0, 0)
    assert math.isnan(rate) and (low, high) == (0.0, 1.0)
    narrow, wide = rate_interval(30, 100, 0.90), rate_interval(30, 100, 0.99)
    assert wide[1] < narrow[1] < 0.3 < narrow[2] < wide[2]
    for bad in [(-1, 10), (11, 10)]:
        with pytest.raises(ValueError):
            rate_interval(*bad)
    with pytest.raises(ValueError):
        rate_interval(1, 10, confidence=1.0)


# -- results: uplift ------------------------------------------------------------------------


def test_uplift_with_known_inputs() -> None:
    result = uplift(45, 100, 30, 100)
    assert result.rate_a == 0.45 and result.rate_b == 0.3
    assert result.difference == pytest.approx(0.15)
    assert result.relative == pytest.approx(0.5)
    # the 2x2 table [[45, 55], [30, 70]] has Pearson chi-square 4.8 (1 df): p = 0.02846
    assert result.p_value == pytest.approx(0.028459, abs=2e-6)
    # rate ratio 1.5, se(ln RR) = sqrt(1/45 - 1/100 + 1/30 - 1/100) = 0.188562:
    # 1.5 * exp(-+1.959964 * 0.188562) = 1.0365 .. 2.1707
    assert result.low == pytest.approx(0.0365, abs=5e-5)
    assert result.high == pytest.approx(1.1707, abs=5e-5)
    assert result.confidence == 0.95


def test_uplift_is_symmetric_where_it_should_be() -> None:
    ab, ba = uplift(120, 1000, 100, 1000), uplift(100, 1000, 120, 1000)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert ab.difference == pytest.approx(-(ba.difference or 0))
    assert ab.low is not None and ab.high is not None and ba.low is not None and ba.high is not None
    assert (1 + ab.low) * (1 + ba.high) == pytest.approx(1)  # the ratio's interval inverts
    assert ab.low < 0 < ab.high and ab.p_value is not None and ab.p_value > 0.05
    same = uplift(100, 1000, 100, 1000)
    assert same.relative == 0 and same.p_value == pytest.approx(1.0)


def test_uplift_zero_cases_are_none_not_division_errors() -> None:
    assert uplift(0, 0, 5, 10) == Uplift(confidence=0.95, rate_a=None, rate_b=0.5)
    assert uplift(5, 10, 0, 0) == Uplift(confidence=0.95, rate_a=0.5, rate_b=None)
    assert uplift(0, 0, 0, 0) == Uplift(confidence=0.95)
    nothing = uplift(0, 100, 0, 100)  # no successes anywhere: nothing to compare
    assert (nothing.rate_a, nothing.rate_b, nothing.difference) == (0.0, 0.0, 0.0)
    assert nothing.relative is None and nothing.low is None and nothing.p_value is None
    none_in_a = uplift(0, 100, 10, 100)
    assert none_in_a.relative == -1.0 and none_in_a.low is None and none_in_a.high is None
    assert none_in_a.p_value is not None and none_in_a.p_value < 0.01
    none_in_b = uplift(10, 100, 0, 100)
    assert none_in_b.relative is None and none_in_b.difference == pytest.approx(0.1)
    everything = uplift(100, 100, 50, 50)  # a pooled rate of 1: nothing to test
    assert everything.relative == 0 and everything.p_value is None
    assert msgspec.to_builtins(nothing)["p_value"] is None  # how results are served


def test_uplift_interval_covers_the_true_uplift_at_its_confidence() -> None:
    rng = np.random.default_rng(7)
    true_a, true_b, n, runs = 0.06, 0.05, 5_000, 2_000
    covered = 0
    for a, b in zip(rng.binomial(n, true_a, runs), rng.binomial(n, true_b, runs), strict=True):
        result = uplift(int(a), n, int(b), n)
        assert result.low is not None and result.high is not None
        covered += result.low <= true_a / true_b - 1 <= result.high
    assert 0.93 < covered / runs < 0.97  # binomial sd of the coverage is about 0.5 %


def test_the_p_value_is_uniform_when_there_is_no_difference() -> None:
    rng = np.random.default_rng(11)
    n, runs = 4_000, 2_000
    p_values = [
        uplift(int(a), n, int(b), n).p_value or 1.0
        for a, b in zip(rng.binomial(n, 0.1, runs), rng.binomial(n, 0.1, runs), strict=True)
    ]
    assert 0.035 < sum(p < 0.05 for p in p_values) / runs < 0.065
