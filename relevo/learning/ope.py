"""Off-policy estimators: how a candidate policy would have done on logged decisions.

Each of n logged rounds gives the reward ``r_i`` of the logged action, the probability ``p_i``
with which the logging policy chose it, and the candidate's probability ``pi_i`` of that same
action; the importance weight is ``w_i = pi_i / p_i``. Then:

- **IPS** (inverse propensity scoring): ``mean(w_i r_i)``. Unbiased, noisy when weights are
  large.
- **SNIPS** (self-normalised IPS): ``sum(w_i r_i) / sum(w_i)``. Slightly biased, usually less
  variance; equals IPS when the weights average 1.
- **DR** (doubly robust): ``mean(dm_i + w_i (r_i - q_i))``, where ``q_i`` is a reward model's
  prediction for the logged action and ``dm_i = sum_a pi(a|x_i) q(x_i, a)`` the candidate's
  expected predicted reward. Unbiased when the propensities are right, whatever the model (if
  it was not fitted on these rounds); a good model takes out the variance that comes from which
  actions the logger happened to choose.

Every estimate comes with an interval: the normal approximation on the per-round terms (the
delta method for SNIPS). With rare rewards that interval is falsely narrow: around zero or one
matched click it has (nearly) zero width, and it cannot see the clicks the test rounds did not
happen to sample on the actions the candidate favours. So each estimate also counts its
*matched* rewarding rounds (the candidate gives the logged action positive probability and the
reward is positive) and their *effective* number ``(sum w_i r_i)^2 / sum w_i^2 r_i``. When the
rewards are counts (clicks, conversions) and they are sparse (fewer than ``min_effective``
effective ones, or one more reward on the round of the largest weight would move the estimate
by more than the normal half-width), the interval is exact-style instead: Fay and Feuer's gamma
interval for a weighted sum of Poisson counts (the exact Poisson interval when all weights are
equal; its upper bound stays positive at zero clicks). For DR that bound covers the weighted
rewards and a normal interval its model part, each at half the error rate. The effective
sample size ``(sum w)^2 / sum w^2`` says how many logged rounds the estimate is really worth;
below ``min_ess`` the estimate is flagged, as no interval computed from a handful of rounds
can be trusted (the heavy weights the sample missed are invisible to it).

Weight clipping (``max_weight``, off by default) caps every ``w_i``: it lowers the variance
but biases the estimate downwards for candidates that favour actions the logger rarely chose;
the bias is not in the interval, so leave it off unless the comparison is explicitly about
clipped estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

NORMAL = "normal"
DELTA = "delta"
WILSON = "wilson"
POISSON = "poisson"  # Fay-Feuer gamma interval on the weighted reward count
SPLIT = "normal+poisson"  # DR: normal on the model part, Poisson on the weighted rewards
UNDEFINED = "undefined"


@dataclass(frozen=True, slots=True)
class EstimatorOptions:
    """How to estimate.

    Attributes:
        level: the intervals' confidence level.
        max_weight: clip every importance weight at this value (``None``: no clipping).
        min_effective: below this effective number of matched rewarding rounds (or when one
            more reward at the largest weight would move the estimate past the normal
            half-width), the intervals of IPS, SNIPS and DR come from the Poisson (Fay-Feuer)
            bound instead of the normal approximation, when the rewards are counts.
        min_ess: an estimate whose effective sample size is below this is flagged: its
            weights rest on a few logged rounds, and no interval computed from those rounds
            (normal or Poisson) can see how far off it may be.
    """

    level: float = 0.95
    max_weight: float | None = None
    min_effective: float = 10.0
    min_ess: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), not {self.level}")
        if self.max_weight is not None and self.max_weight <= 0.0:
            raise ValueError(f"max_weight must be positive, not {self.max_weight}")


DEFAULT_OPTIONS = EstimatorOptions()


@dataclass(frozen=True, slots=True)
class Rounds:
    """n logged rounds as arrays of length n (build with :meth:`of`).

    Attributes:
        rewards: ``r_i``, the logged action's reward.
        propensities: ``p_i``, the logging policy's probability of the logged action (> 0).
        target: ``pi_i``, the candidate's probability of the logged action.
        predicted: ``q_i``, the reward model's prediction for the logged action (DR only).
        expected: ``sum_a pi(a|x_i) q(x_i, a)``, the candidate's expected predicted reward
            (DR only).
    """

    rewards: Array
    propensities: Array
    target: Array
    predicted: Array | None = None
    expected: Array | None = None

    @classmethod
    def of(
        cls,
        rewards: npt.ArrayLike,
        propensities: npt.ArrayLike,
        target: npt.ArrayLike,
        predicted: npt.ArrayLike | None = None,
        expected: npt.ArrayLike | None = None,
    ) -> Rounds:
        rounds = cls(
            _vector(rewards),
            _vector(propensities),
            _vector(target),
            None if predicted is None else _vector(predicted),
            None if expected is None else _vector(expected),
        )
        rounds.validate()
        return rounds

    @property
    def n(self) -> int:
        return len(self.rewards)

    def validate(self) -> None:
        n = self.n
        if n < 2:
            raise ValueError(f"need at least 2 logged rounds, got {n}")
        arrays = (self.propensities, self.target, self.predicted, self.expected)
        if any(a is not None and a.shape != (n,) for a in arrays):
            raise ValueError("every array must have one value per logged round")
        if (self.predicted is None) != (self.expected is None):
            raise ValueError("DR needs both predicted and expected")
        if not np.all(self.propensities > 0.0):
            raise ValueError("logged propensities must be positive")
        if not np.all((self.target >= 0.0) & (self.target <= 1.0)):
            raise ValueError("the candidate's probabilities must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float
    method: str


@dataclass(frozen=True, slots=True)
class Estimate:
    """One estimator's estimate of a policy's mean reward per round.

    Attributes:
        estimator: "IPS", "SNIPS", "DR" or "logged" (the logging policy's own mean reward).
        value: the estimate.
        interval: its confidence interval and how it was computed.
        rounds: logged rounds used.
        ess: effective sample size of the weights, ``(sum w)^2 / sum w^2``.
        matched: rounds where the candidate gives the logged action positive probability and
            the reward is positive.
        effective_matched: ``(sum w r)^2 / sum w^2 r``, what the matched rewards are worth
            (equals ``matched`` when their weights are equal).
        low_ess: ``ess`` is below the options' ``min_ess``: do not trust this estimate.
    """

    estimator: str
    value: float
    interval: Interval
    rounds: int
    ess: float
    matched: int
    effective_matched: float
    low_ess: bool = False

    def row(self) -> tuple[str, ...]:
        """The estimate as a table row (see :data:`COLUMNS`); rates in percent."""
        return (
            self.estimator,
            _percent(self.value),
            _percent(self.interval.low),
            _percent(self.interval.high),
            self.interval.method,
            f"{self.ess:,.1f}" + ("!" if self.low_ess else ""),
            f"{self.matched:,}",
            f"{self.effective_matched:,.2f}",
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "low": self.interval.low,
            "high": self.interval.high,
            "interval": self.interval.method,
            "rounds": self.rounds,
            "ess": self.ess,
            "matched": self.matched,
            "effective_matched": self.effective_matched,
            "low_ess": self.low_ess,
        }


COLUMNS = ("estimator", "estimate %", "low %", "high %", "interval", "ESS", "matched", "eff.")
LOW_ESS_NOTE = (
    "! effective sample size below the minimum: the estimate rests on a few logged rounds and "
    "its interval understates the uncertainty"
)


def render_table(estimates: Sequence[Estimate]) -> str:
    """The estimates as an aligned text table, one row each."""
    rows = [COLUMNS, *(estimate.row() for estimate in estimates)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    if any(estimate.low_ess for estimate in estimates):
        lines.append(LOW_ESS_NOTE)
    return "\n".join(line.rstrip() for line in lines)


def weights(rounds: Rounds, options: EstimatorOptions = DEFAULT_OPTIONS) -> Array:
    """The importance weights ``pi_i / p_i``, clipped at ``options.max_weight`` if set."""
    w = rounds.target / rounds.propensities
    return w if options.max_weight is None else np.minimum(w, options.max_weight)


def effective_sample_size(w: Array) -> float:
    """``(sum w)^2 / sum w^2``: n for equal weights, 1 when one weight dominates."""
    squares = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / squares if squares > 0.0 else 0.0


def ips(rounds: Rounds, options: EstimatorOptions = DEFAULT_OPTIONS) -> Estimate:
    w = weights(rounds, options)
    terms = w * rounds.rewards
    value = float(terms.mean())
    interval = _normal(terms, options.level)
    counts = _WeightedRewards.of(w, rounds.rewards)
    if counts.sparse(options):
        low, high = counts.poisson_bounds(options.level)
        interval = Interval(low / rounds.n, high / rounds.n, POISSON)
    return counts.estimate("IPS", value, interval, rounds.n, options)


def snips(rounds: Rounds, options: EstimatorOptions = DEFAULT_OPTIONS) -> Estimate:
    w = weights(rounds, options)
    total = float(np.sum(w))
    counts = _WeightedRewards.of(w, rounds.rewards)
    if total <= 0.0:  # the candidate never chose a logged action: nothing to normalise by
        nan = float("nan")
        undefined = Interval(nan, nan, UNDEFINED)
        return counts.estimate("SNIPS", nan, undefined, rounds.n, options)
    value = float(np.sum(w * rounds.rewards)) / total
    se = math.sqrt(float(np.sum(w * w * (rounds.rewards - value) ** 2))) / total
    half = _z(options.level) * se
    interval = Interval(value - half, value + half, DELTA)
    if counts.sparse(options):
        low, high = counts.poisson_bounds(options.level)
        interval = Interval(low / total, high / total, POISSON)
    return counts.estimate("SNIPS", value, interval, rounds.n, options)


def doubly_robust(rounds: Rounds, options: EstimatorOptions = DEFAULT_OPTIONS) -> Estimate:
    if rounds.predicted is None or rounds.expected is None:
        raise ValueError("DR needs the reward model's predicted and expected rewards")
    w = weights(rounds, options)
    model_part = rounds.expected - w * rounds.predicted
    terms = model_part + w * rounds.rewards
    value = float(terms.mean())
    interval = _normal(terms, options.level)
    counts = _WeightedRewards.of(w, rounds.rewards)
    if counts.sparse(options):
        # Bonferroni: each part at half the error rate, so both hold together at `level`
        split = 1.0 - (1.0 - options.level) / 2.0
        model = _normal(model_part, split)
        low, high = counts.poisson_bounds(split)
        interval = Interval(model.low + low / rounds.n, model.high + high / rounds.n, SPLIT)
    return counts.estimate("DR", value, interval, rounds.n, options)


def on_policy(rewards: npt.ArrayLike, level: float = 0.95) -> Estimate:
    """The logging policy's own mean reward, with a Wilson interval for 0/1 rewards."""
    r = _vector(rewards)
    n = len(r)
    if n < 2:
        raise ValueError(f"need at least 2 logged rounds, got {n}")
    value = float(r.mean())
    binary = bool(np.all((r == 0.0) | (r == 1.0)))
    interval = _wilson(value, n, level) if binary else _normal(r, level)
    matched = int(np.count_nonzero(r > 0.0))
    return Estimate("logged", value, interval, n, float(n), matched, float(matched))


def estimate_all(rounds: Rounds, options: EstimatorOptions = DEFAULT_OPTIONS) -> list[Estimate]:
    """IPS, SNIPS and, when the rounds carry reward-model predictions, DR."""
    found = [ips(rounds, options), snips(rounds, options)]
    if rounds.predicted is not None:
        found.append(doubly_robust(rounds, options))
    return found


# -- the pieces ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WeightedRewards:
    """The weighted reward count ``sum w_i r_i`` and what its interval needs."""

    total: float  # sum w r
    squares: float  # sum w^2 r (the variance of a weighted Poisson count)
    max_weight: float
    matched: int
    ess: float
    counts: bool  # every reward is a non-negative whole number (clicks, conversions)

    @classmethod
    def of(cls, w: Array, rewards: Array) -> _WeightedRewards:
        counts = bool(np.all((rewards >= 0.0) & (rewards == np.floor(rewards))))
        return cls(
            total=float(np.sum(w * rewards)),
            squares=float(np.sum(w * w * rewards)),
            max_weight=float(np.max(w)),
            matched=int(np.count_nonzero((w > 0.0) & (rewards > 0.0))),
            ess=effective_sample_size(w),
            counts=counts,
        )

    @property
    def effective(self) -> float:
        return self.total**2 / self.squares if self.squares > 0.0 else 0.0

    def sparse(self, options: EstimatorOptions) -> bool:
        """Too few rewards for the normal approximation: fewer than ``min_effective`` effective
        ones, or so few that one more on the round of the largest weight would move the
        weighted count by more than the normal interval's half-width."""
        if not self.counts:
            return False
        half_width = _z(options.level) * math.sqrt(self.squares)
        return self.effective < options.min_effective or self.max_weight > half_width

    def poisson_bounds(self, level: float) -> tuple[float, float]:
        """Fay and Feuer's (1997) gamma interval for ``sum w_i r_i`` with Poisson ``r_i``.

        The count is treated as a scaled Poisson variable with ``total^2 / squares`` events;
        the upper bound adds one event of the largest weight, so it stays positive at zero.
        """
        alpha = 1.0 - level
        y, v, top = self.total, self.squares, self.max_weight
        low = (v / y) * gamma_quantile(y * y / v, alpha / 2.0) if y > 0.0 else 0.0
        if top <= 0.0:
            return low, 0.0
        shape = (y + top) ** 2 / (v + top * top)
        high = (v + top * top) / (y + top) * gamma_quantile(shape, 1.0 - alpha / 2.0)
        return low, high

    def estimate(
        self, name: str, value: float, interval: Interval, rounds: int, options: EstimatorOptions
    ) -> Estimate:
        low_ess = self.ess < options.min_ess
        return Estimate(
            name, value, interval, rounds, self.ess, self.matched, self.effective, low_ess
        )


def gamma_quantile(shape: float, p: float) -> float:
    """The ``p`` quantile of the gamma distribution with ``shape`` and scale 1 (bisection)."""
    if not (shape > 0.0 and 0.0 < p < 1.0):
        raise ValueError(f"need shape > 0 and 0 < p < 1, got {shape}, {p}")
    low, high = 0.0, max(1.0, shape)
    while _gamma_cdf(shape, high) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if _gamma_cdf(shape, middle) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2.0


def _gamma_cdf(shape: float, x: float) -> float:
    """The regularised lower incomplete gamma function P(shape, x) (Numerical Recipes 6.2)."""
    if x <= 0.0:
        return 0.0
    log_prefix = -x + shape * math.log(x) - math.lgamma(shape)
    if x < shape + 1.0:  # the series converges fast here
        term = total = 1.0 / shape
        a = shape
        while abs(term) > abs(total) * 1e-16:
            a += 1.0
            term *= x / a
            total += term
        return min(1.0, total * math.exp(log_prefix))
    tiny = 1e-300  # Lentz's continued fraction for the upper function Q = 1 - P
    b = x + 1.0 - shape
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    i = 0
    while True:
        i += 1
        an = -i * (i - shape)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        if abs(d * c - 1.0) < 1e-16 or i > 10_000:
            break
    return max(0.0, 1.0 - math.exp(log_prefix) * h)


def _normal(terms: Array, level: float) -> Interval:
    mean = float(terms.mean())
    half = _z(level) * float(terms.std(ddof=1)) / math.sqrt(len(terms))
    return Interval(mean - half, mean + half, NORMAL)


def _wilson(rate: float, n: int, level: float) -> Interval:
    z = _z(level)
    scale = 1.0 + z * z / n
    centre = (rate + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(rate * (1.0 - rate) / n + z * z / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half), WILSON)


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _vector(values: npt.ArrayLike) -> Array:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100.0 * value:.3f}"
