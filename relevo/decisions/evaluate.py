"""Offline evaluation of a candidate policy on a placement's decision log.

The log is split by time: the candidate learns from the earlier ``train_fraction`` of the
decisions and is estimated on the later part, against the logged policy's own mean reward on
that same part. Each decision contributes its first served offer (the one its logged
probability is about: the probability of being put first), that probability, and whether the
offer earned the reward (a click or a conversion).

**How the candidate is trained.** It learns from *every* training decision, with
``learn_one(context, served offer, reward)``, unweighted. Relevo's policies keep one model per
offer (a ridge regression of reward on context, or a click count) fitted on the decisions
where that offer was served. The logging policy chose from the logged features only (Relevo
logs the features it decides from), so this selection shifts which contexts each offer's model
sees but does not bias its estimate of the reward given the context: per offer it is the
direct method's reward regression. The
alternatives are worse: weighting each row by ``1 / propensity`` corrects that shift only
for a misspecified model, at the price of a variance that explodes with small propensities
(the Bernoulli-TS logs of the Open Bandit Dataset go down to 4.5e-5); rejection-sampling
replay keeps only the rows where the logger happened to agree with the candidate (1/K of
them), which at a click rate under 1 % leaves almost no click. (A non-contextual candidate
trained on the log of a contextual logger learns each offer's click rate in the contexts the
logger showed it in, not over all contexts.)

The trained candidate is then frozen (it does not learn from the test decisions, so the
estimate is of the policy as trained): on each test decision its ``choose`` gives the
probability of the logged offer, and the estimators of :mod:`relevo.learning.ope` turn those
into IPS, SNIPS and DR estimates. DR's reward model is a per-offer ridge regression
(:class:`~relevo.learning.linear.RidgeModel`) trained on the same training decisions, its
predictions clipped to [0, 1] as the rewards are 0 or 1; it never sees the test decisions, so
DR stays unbiased whatever its errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from relevo.decisions.log import LoggedDecision
from relevo.learning.bandits import build_policy
from relevo.learning.linear import RidgeModel
from relevo.learning.ope import (
    DEFAULT_OPTIONS,
    Estimate,
    EstimatorOptions,
    Rounds,
    estimate_all,
    on_policy,
    render_table,
)
from relevo.learning.policy import Policy, Vector

Reward = Literal["click", "conversion"]


class Hasher(Protocol):
    """Turns a decision's flattened features into the policy's context vector."""

    @property
    def dim(self) -> int: ...

    def transform(self, features: Mapping[str, float]) -> Vector: ...


class Candidate(Protocol):
    """A policy to evaluate: its name, and how to build a fresh one."""

    @property
    def name(self) -> str: ...

    def build(self, dim: int, seed: int) -> Policy: ...


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A Relevo policy by algorithm and settings (see ``relevo.learning.bandits.build_policy``)."""

    algorithm: str
    params: Mapping[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        settings = ", ".join(f"{key}={value:g}" for key, value in sorted(self.params.items()))
        return f"{self.algorithm}({settings})" if settings else self.algorithm

    def build(self, dim: int, seed: int) -> Policy:
        return build_policy(self.algorithm, dim=dim, seed=seed, **self.params)


@dataclass(frozen=True, slots=True)
class Span:
    """A part of the log: how many decisions, rewards, and from when to when."""

    decisions: int
    rewards: int
    start: datetime
    end: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "decisions": self.decisions,
            "rewards": self.rewards,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """A candidate's estimates on the test part of a log, beside the logged policy's."""

    placement: str
    policy: str
    logged_by: list[str]  # the policies that made the test decisions (DecisionRecord.policy)
    reward: Reward
    train: Span
    test: Span
    skipped: int  # decisions with no served offer, or a served offer without a probability
    deterministic: int  # test decisions served with probability 1 among several offers
    logged: Estimate
    estimates: list[Estimate]
    options: EstimatorOptions

    def table(self) -> str:
        head = (
            f"{self.policy} on {self.placement}, reward {self.reward}: trained on "
            f"{self.train.decisions:,} decisions ({self.train.rewards} rewards, "
            f"{self.train.start:%Y-%m-%d %H:%M} to {self.train.end:%Y-%m-%d %H:%M}), "
            f"estimated on {self.test.decisions:,} ({self.test.rewards} rewards, to "
            f"{self.test.end:%Y-%m-%d %H:%M}); logged by {', '.join(self.logged_by)}; "
            f"{self.options.level:.0%} intervals"
        )
        notes = [head]
        if self.skipped:
            notes.append(f"{self.skipped:,} decisions skipped (no served offer with a probability)")
        if self.deterministic:
            notes.append(
                f"{self.deterministic:,} test decisions were made deterministically (probability "
                "1 with other offers eligible): they tell nothing of the other offers, so the "
                "estimates lean towards the logged policy's choices"
            )
        return "\n".join(notes) + "\n\n" + render_table(self.rows())

    def rows(self) -> list[Estimate]:
        return [self.logged, *self.estimates]

    def to_dict(self) -> dict[str, object]:
        return {
            "placement": self.placement,
            "policy": self.policy,
            "logged_by": self.logged_by,
            "reward": self.reward,
            "train": self.train.to_dict(),
            "test": self.test.to_dict(),
            "skipped": self.skipped,
            "deterministic": self.deterministic,
            "level": self.options.level,
            "max_weight": self.options.max_weight,
            "min_effective": self.options.min_effective,
            "min_ess": self.options.min_ess,
            "estimates": [estimate.to_dict() for estimate in self.rows()],
        }


@dataclass(frozen=True, slots=True)
class _Round:
    """One usable logged decision: what was served first, with which probability, and how it
    did."""

    at: datetime
    policy: str
    features: Mapping[str, float]
    actions: Sequence[str]
    offer: str
    propensity: float
    reward: float


def evaluate(
    logged: Iterable[LoggedDecision],
    candidate: Candidate,
    *,
    hasher: Hasher,
    train_fraction: float = 0.7,
    reward: Reward = "click",
    seed: int = 0,
    options: EstimatorOptions = DEFAULT_OPTIONS,
    ridge: float = 1.0,
) -> EvaluationReport:
    """Train ``candidate`` on the earlier part of ``logged`` and estimate it on the rest.

    ``logged`` is one placement's decisions (any order: they are sorted by time); ``ridge`` is
    the regularisation of DR's reward model. Raises ValueError when either part would hold
    fewer than two usable decisions.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    placement, read, rounds = "", 0, []
    for decision in logged:
        placement, read = placement or decision.record.placement, read + 1
        found = _round_of(decision, reward)
        if found is not None:
            rounds.append(found)
    rounds.sort(key=lambda r: r.at)
    cut = round(train_fraction * len(rounds))
    train, test = rounds[:cut], rounds[cut:]
    if len(train) < 2 or len(test) < 2:
        raise ValueError(
            f"{len(rounds)} usable decisions leave {len(train)} to train on and {len(test)} "
            "to evaluate on; at least 2 each are needed"
        )
    policy = candidate.build(hasher.dim, seed)
    model = RidgeModel(hasher.dim, ridge=ridge)
    _train(train, hasher, policy, model)
    return EvaluationReport(
        placement=placement,
        policy=candidate.name,
        logged_by=sorted({r.policy for r in test}),
        reward=reward,
        train=_span(train),
        test=_span(test),
        skipped=read - len(rounds),
        deterministic=sum(1 for r in test if r.propensity >= 1.0 and len(r.actions) > 1),
        logged=on_policy([r.reward for r in test], options.level),
        estimates=estimate_all(_test_rounds(test, hasher, policy, model), options),
        options=options,
    )


def _round_of(decision: LoggedDecision, reward: Reward) -> _Round | None:
    record = decision.record
    if not record.chosen:
        return None
    first = record.chosen[0]
    actions = record.candidates or list(record.probabilities)
    if first.probability <= 0.0 or first.offer not in actions:
        return None
    earned = decision.clicks if reward == "click" else decision.conversions
    return _Round(
        at=record.at,
        policy=record.policy,
        features=record.features,
        actions=actions,
        offer=first.offer,
        propensity=first.probability,
        reward=1.0 if first.offer in earned else 0.0,
    )


def _train(rounds: Sequence[_Round], hasher: Hasher, policy: Policy, model: RidgeModel) -> None:
    for r in rounds:
        context = hasher.transform(r.features)
        policy.learn_one(context, r.offer, r.reward)
        model.learn_one(context, r.offer, r.reward)


def _test_rounds(
    rounds: Sequence[_Round], hasher: Hasher, policy: Policy, model: RidgeModel
) -> Rounds:
    target, predicted, expected = [], [], []
    for r in rounds:
        context = hasher.transform(r.features)
        probabilities = policy.choose(context, r.actions).probabilities
        # the rewards are 0/1: a linear model's prediction outside [0, 1] is only its error
        predictions = {
            a: min(max(q, 0.0), 1.0) for a, q in model.predict(context, r.actions).items()
        }
        target.append(probabilities[r.offer])
        predicted.append(predictions[r.offer])
        expected.append(sum(p * predictions[a] for a, p in probabilities.items()))
    return Rounds.of(
        rewards=[r.reward for r in rounds],
        propensities=[r.propensity for r in rounds],
        target=target,
        predicted=predicted,
        expected=expected,
    )


def _span(rounds: Sequence[_Round]) -> Span:
    rewards = sum(1 for r in rounds if r.reward > 0.0)
    return Span(len(rounds), rewards, rounds[0].at, rounds[-1].at)
