"""Experiments and the global holdout: sticky assignment, and the statistics of their results.

Assignment is a pure function of a salt and a unit (a profile id, or the caller's id before
there is a profile): a keyed hash (BLAKE2b, never Python's per-process ``hash``) gives a 64-bit
number, uniform in [0, 1) once scaled, mapped onto the variants' cumulative weights. The same
unit gets the same variant in every process and after every restart, for as long as the salt
and the weights stay the same; changing a weight moves the boundaries after it, so some units
change variant.

The holdout hashes with its own salt, so being in the holdout is independent of the variant a
unit would get. Callers check the holdout first: a unit in it sees no experiment.

Results: :func:`rate_interval` (Wilson score interval) and :func:`uplift` (relative uplift
with a log rate-ratio interval, and a two-proportion z-test). Pure Python: ``math`` and
``statistics.NormalDist``; no I/O.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from statistics import NormalDist
from typing import Any

import msgspec

from relevo.errors import ErrorDetail, ValidationError
from relevo.segments.model import NAME

HOLDOUT_SALT = "relevo-holdout"
RESERVED_VARIANT = "holdout"  # what the decision log records for the holdout group
_SCALE = 2.0**64


class Variant(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One arm of an experiment: its share of units, and how its decisions are made.

    ``arbitration`` overrides the placement's (the caller interprets it: ``priority``, ``pvl``,
    ``bandit``); ``offers``, when given, restricts the variant to those offers (an empty list
    serves nothing, a "no offer" control).
    """

    name: str
    weight: float
    arbitration: str | None = None
    offers: list[str] | None = None


class Experiment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """An experiment on one placement. Validated when built or decoded: a bad definition
    raises :class:`~relevo.errors.ValidationError` with one detail per bad field."""

    id: str
    placement: str
    variants: list[Variant]
    start: datetime | None = None
    end: datetime | None = None
    salt: str | None = None  # None: the id (change it to reshuffle every unit)

    def __post_init__(self) -> None:
        details = _problems(self)
        if details:
            first = details[0]
            raise ValidationError(
                f"experiment {self.id!r}: {first.location}: {first.message}", details=details
            )

    @property
    def bucket_salt(self) -> str:
        return self.id if self.salt is None else self.salt

    def active(self, now: datetime) -> bool:
        """Whether the experiment runs at ``now`` (from ``start``, before ``end``)."""
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


def _problems(experiment: Experiment) -> list[ErrorDetail]:
    found: list[ErrorDetail] = []
    if not NAME.match(experiment.id):
        found.append(_bad("id", "an experiment id is 1-64 of a-z, 0-9, _ and -"))
    if not experiment.placement:
        found.append(_bad("placement", "an experiment needs a placement"))
    if experiment.salt == "":
        found.append(_bad("salt", "the salt must not be empty (leave it out to use the id)"))
    found.extend(_period_problems(experiment.start, experiment.end))
    if len(experiment.variants) < 2:
        found.append(_bad("variants", "an experiment needs at least 2 variants"))
    seen: set[str] = set()
    for i, variant in enumerate(experiment.variants):
        found.extend(_variant_problems(variant, f"variants[{i}]", seen))
        seen.add(variant.name)
    return found


def _bad(location: str, message: str) -> ErrorDetail:
    return ErrorDetail(location, message, "invalid_experiment")


def _period_problems(start: datetime | None, end: datetime | None) -> list[ErrorDetail]:
    naive = [
        _bad(field, f"{field} needs a time zone, such as 2025-01-31T00:00:00Z")
        for field, moment in (("start", start), ("end", end))
        if moment is not None and moment.utcoffset() is None
    ]
    if naive:
        return naive
    if start and end and end <= start:
        return [_bad("end", "end must be after start")]
    return []


def _variant_problems(variant: Variant, where: str, seen: set[str]) -> list[ErrorDetail]:
    found: list[ErrorDetail] = []
    if not NAME.match(variant.name) or variant.name == RESERVED_VARIANT:
        message = f"a variant name is 1-64 of a-z, 0-9, _ and -, and not {RESERVED_VARIANT!r}"
        found.append(_bad(f"{where}.name", message))
    elif variant.name in seen:
        found.append(_bad(f"{where}.name", f"variant {variant.name!r} is defined twice"))
    if not _positive(variant.weight):
        found.append(_bad(f"{where}.weight", "a weight is a positive number"))
    if variant.arbitration == "":
        found.append(_bad(f"{where}.arbitration", "leave it out to use the placement's"))
    if variant.offers is not None and len(set(variant.offers)) != len(variant.offers):
        found.append(_bad(f"{where}.offers", "an offer is listed twice"))
    return found


def _positive(weight: Any) -> bool:
    return (
        isinstance(weight, int | float)
        and not isinstance(weight, bool)
        and math.isfinite(weight)
        and weight > 0
    )


# -- assignment -------------------------------------------------------------------------------


def _uniform(salt: str, unit: str) -> float:
    """A number in [0, 1), uniform over units, the same for a (salt, unit) pair everywhere.

    The hashed text is length-prefixed so no two (salt, unit) pairs share it. Changing this
    function reassigns every unit of every experiment.
    """
    text = f"{len(salt)}:{salt}:{unit}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(experiment: Experiment, unit: str) -> Variant:
    """The variant ``unit`` is in: sticky, deterministic, in proportion to the weights."""
    variants = experiment.variants
    point = _uniform(experiment.bucket_salt, unit) * sum(v.weight for v in variants)
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if point < cumulative:
            return variant
    return variants[-1]  # float rounding at the very top


def in_holdout(unit: str, percent: float, salt: str = HOLDOUT_SALT) -> bool:
    """Whether ``unit`` is in the global holdout of ``percent`` % (0-100) of units."""
    if not 0 <= percent <= 100:
        raise ValidationError(
            f"a holdout is 0-100 percent, not {percent}",
            details=[ErrorDetail("holdout_percent", "expected 0 to 100", "invalid")],
        )
    return _uniform(salt, unit) * 100 < percent


# -- results ----------------------------------------------------------------------------------


class Uplift(msgspec.Struct, kw_only=True, frozen=True):
    """Variant a against baseline b. A field is None where the data cannot define it.

    ``relative`` is ``rate_a / rate_b - 1``; ``low``/``high`` its confidence interval, from the
    delta method on the log of the rate ratio (Katz: ``ln(RR) +- z * sqrt(1/x_a - 1/n_a +
    1/x_b - 1/n_b)``), defined when both variants have at least one success. ``difference``
    is ``rate_a - rate_b`` and ``p_value`` the two-sided p-value of the pooled two-proportion
    z-test of no difference (None when the pooled rate is 0 or 1: nothing to test).
    """

    confidence: float
    rate_a: float | None = None
    rate_b: float | None = None
    difference: float | None = None
    relative: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check_counts(successes: int, trials: int) -> None:
    if not 0 <= successes <= trials:
        raise ValueError(f"expected 0 <= successes <= trials, got {successes} of {trials}")


def rate_interval(
    successes: int, trials: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(rate, low, high)``: the success rate and its Wilson score interval.

    With no trials the rate is NaN and the interval the whole of [0, 1] (the Wilson interval's
    limit as trials go to 0). 0 successes give a low of exactly 0, all successes a high of 1.
    """
    _check_counts(successes, trials)
    z = _z(confidence)
    if trials == 0:
        return math.nan, 0.0, 1.0
    n, p, z2 = trials, successes / trials, z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return p, low, high


def uplift(
    a_successes: int,
    a_trials: int,
    b_successes: int,
    b_trials: int,
    confidence: float = 0.95,
) -> Uplift:
    """How variant a does against baseline b (see :class:`Uplift` for the methods)."""
    _check_counts(a_successes, a_trials)
    _check_counts(b_successes, b_trials)
    z = _z(confidence)
    rate_a = a_successes / a_trials if a_trials else None
    rate_b = b_successes / b_trials if b_trials else None
    if rate_a is None or rate_b is None:
        return Uplift(confidence=confidence, rate_a=rate_a, rate_b=rate_b)
    relative = rate_a / rate_b - 1 if rate_b > 0 else None
    low = high = None
    if a_successes > 0 and b_successes > 0:
        log_ratio = math.log(rate_a / rate_b)
        se = math.sqrt(1 / a_successes - 1 / a_trials + 1 / b_successes - 1 / b_trials)
        low, high = math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1
    return Uplift(
        confidence=confidence,
        rate_a=rate_a,
        rate_b=rate_b,
        difference=rate_a - rate_b,
        relative=relative,
        low=low,
        high=high,
        p_value=_two_proportion_p(a_successes, a_trials, b_successes, b_trials),
    )


def _two_proportion_p(
    a_successes: int, a_trials: int, b_successes: int, b_trials: int
) -> float | None:
    pooled = (a_successes + b_successes) / (a_trials + b_trials)
    variance = pooled * (1 - pooled) * (1 / a_trials + 1 / b_trials)
    if variance <= 0:
        return None
    z = (a_successes / a_trials - b_successes / b_trials) / math.sqrt(variance)
    return min(1.0, 2 * NormalDist().cdf(-abs(z)))
