"""Deciding: from a profile, a placement and the request's context to the offers to show.

Per placement: holdout or experiment variant -> candidates (live, right channel, in the
variant, eligible, within caps and budgets) -> arbitration (priority, propensity x value x
lever, or a bandit) -> the top offers, their content rendered from allowlisted fields only ->
one decision record with the probability of every candidate and the features used.
Pure: the caller supplies the profile, the policies, the impression counters and the clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from relevo.content.templates import RenderProblem
from relevo.decisions.caps import within_counter, within_profile_caps
from relevo.decisions.catalog import Catalog, FeaturePaths, Offer, Placement
from relevo.decisions.experiments import Experiment, Variant, assign, in_holdout
from relevo.decisions.feedback import KIND_EVENTS
from relevo.decisions.log import Chosen, DecisionRecord, ShadowChoice
from relevo.learning.features import Encoded, flatten_into
from relevo.learning.linear import RidgeModel
from relevo.learning.policy import Choice, Policy, Vector
from relevo.profiles.computed_defs import lookup
from relevo.profiles.model import Profile
from relevo.segments.engine import rule_data

HOLDOUT = "holdout"
MEMOS_KEPT = 100_000  # profiles whose stored-state results are kept


class _ProfileMemo:
    """Eligibility results (rule text -> bool) and features (placement id -> features) that
    depend only on a profile's stored state."""

    __slots__ = ("data", "eligible", "features", "profile", "version")

    def __init__(self, profile: Profile, version: str) -> None:
        self.profile = profile
        self.version = version
        self.data: dict[str, Any] | None = None  # what rules read of the stored state
        self.eligible: dict[str, bool] = {}
        self.features: dict[str, tuple[dict[str, float], Encoded]] = {}


class Models(Protocol):
    """The live learned state of each placement."""

    def policy(self, placement: Placement) -> Policy: ...
    def shadow(self, placement: Placement) -> Policy: ...
    def propensity(self, placement: Placement) -> RidgeModel: ...


@dataclass(frozen=True, slots=True)
class Ask:
    placement: str
    limit: int | None = None  # at most this many offers (and at most the placement's max)


@dataclass(frozen=True)
class DecideRequest:
    asks: list[Ask]
    context: dict[str, Any]
    unit: str  # who experiments and the holdout assign: the profile id, else the caller's id
    explain: bool = False

    @property
    def channel(self) -> str | None:
        channel = self.context.get("channel")
        return channel if isinstance(channel, str) else None


@dataclass(frozen=True, slots=True)
class Served:
    offer: Offer
    position: int
    content: Any


@dataclass
class PlacementDecision:
    placement: Placement
    record: DecisionRecord
    served: list[Served]
    explanation: dict[str, Any] | None = None
    problems: list[RenderProblem] = field(default_factory=list)  # content that did not render

    def feedback(self, offer: Offer) -> dict[str, Any]:
        """The events the caller sends back for an impression, a click, a conversion."""
        properties = {
            "decision_id": self.record.id,
            "offer_id": offer.id,
            "placement": self.placement.id,
        }
        return {
            kind: {"event": name, "properties": properties} for kind, name in KIND_EVENTS.items()
        }


class _RandomBits:
    """48-bit values from the OS's random source, read a few kilobytes at a time (one
    ``os.urandom`` call per decision would be a system call on the hot path)."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._pool = b""
        self._at = 0

    def next_hex(self) -> str:
        if self._at + 6 > len(self._pool):
            self._pool, self._at = os.urandom(self._chunk * 6), 0
        start, self._at = self._at, self._at + 6
        return self._pool[start : self._at].hex()


_random_bits = _RandomBits()


def new_decision_id(now: datetime) -> str:
    """Time-ordered, unguessable: milliseconds then 48 random bits."""
    return f"dec_{int(now.timestamp() * 1000):012x}{_random_bits.next_hex()}"


class Decider:
    def __init__(
        self,
        catalog: Callable[[], Catalog],
        models: Models,
        counters: Callable[[], Mapping[str, int]],
        computed: Callable[[Profile, datetime], dict[str, Any]],
        holdout_percent: float,
        new_id: Callable[[datetime], str] = new_decision_id,
    ) -> None:
        self._catalog = catalog
        self._models = models
        self._counters = counters
        self._computed = computed
        self._holdout_percent = holdout_percent
        self._new_id = new_id
        self._memos: dict[str, _ProfileMemo] = {}

    def _memo(self, profile: Profile | None) -> _ProfileMemo | None:
        """What was worked out from a profile's stored state, valid while the profile cache
        hands out the same profile object (a change to the profile makes a new one)."""
        if profile is None:
            return None
        version = self._catalog().version
        memo = self._memos.get(profile.id)
        if memo is None or memo.profile is not profile or memo.version != version:
            if len(self._memos) >= MEMOS_KEPT:
                self._memos.clear()
            memo = self._memos[profile.id] = _ProfileMemo(profile, version)
        return memo

    def decide(
        self, profile: Profile | None, request: DecideRequest, now: datetime
    ) -> list[PlacementDecision]:
        """Decide every asked placement. Raises KeyError naming an unknown placement."""
        catalog = self._catalog()
        placements = [catalog.placements[ask.placement] for ask in request.asks]
        memo = self._memo(profile)
        data = self._data(profile, memo, request.context, now)
        holdout = self._holdout_percent > 0 and in_holdout(request.unit, self._holdout_percent)
        return [
            _PlacementRun(self, placement, ask, profile, memo, request, data, now, holdout).run()
            for placement, ask in zip(placements, request.asks, strict=True)
        ]

    def _data(
        self,
        profile: Profile | None,
        memo: _ProfileMemo | None,
        context: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        """What rules read: the profile's stored state (built once per state), its computed
        traits (which slide with time) and the request's context."""
        if profile is None or memo is None:
            return {"context": context, "segments": set(), "now": now}
        if memo.data is None:
            memo.data = rule_data(profile, {}, now)
            memo.data["segments"] = set(profile.segments)
        data = dict(memo.data)
        data["computed"] = self._computed(profile, now)
        data["context"] = context
        data["now"] = now
        return data


class _PlacementRun:
    """One placement's decision; a class only to share its inputs between the steps."""

    def __init__(
        self,
        decider: Decider,
        placement: Placement,
        ask: Ask,
        profile: Profile | None,
        memo: _ProfileMemo | None,
        request: DecideRequest,
        data: dict[str, Any],
        now: datetime,
        holdout: bool,
    ) -> None:
        self.d = decider
        self.placement = placement
        self.limit = min(
            ask.limit or placement.definition.max_offers, placement.definition.max_offers
        )
        self.profile = profile
        self.request = request
        self.data = data
        self.now = now
        self.holdout = holdout
        self.memo = memo
        self.filtered: dict[str, str] = {}

    def run(self) -> PlacementDecision:
        placement = self.placement
        experiment, variant = self._variant()
        arbitration = (variant.arbitration if variant and variant.arbitration else None) or (
            placement.definition.arbitration
        )
        candidates = self._candidates(variant)
        features, context_vector = self._features()
        if self.holdout:
            policy_name, choice = "default", _fixed(candidates)
        else:
            policy_name, choice = self._arbitrate(arbitration, candidates, context_vector)
        chosen = choice.ranking[: self.limit] if choice else []
        offers = self.d._catalog().offers
        record = DecisionRecord(
            id=self.d._new_id(self.now),
            at=self.now,
            placement=placement.id,
            profile_id=self.profile.id if self.profile else None,
            policy=policy_name,
            experiment=experiment.id if experiment and not self.holdout else None,
            variant=HOLDOUT if self.holdout else (variant.name if variant else None),
            features=features,
            candidates=[o.id for o in candidates],
            chosen=[
                Chosen(o, i, choice.probabilities.get(o, 0.0), choice.scores.get(o, 0.0))
                for i, o in enumerate(chosen)
            ]
            if choice
            else [],
            shadow=self._shadow(candidates, context_vector, chosen[0] if chosen else None),
        )
        decision = PlacementDecision(placement, record, [])
        variables = self._variables() if chosen else {}
        for position, offer_id in enumerate(chosen):
            offer = offers[offer_id]
            content = offer.content.render(
                {**variables, "offer": _offer_vars(offer)}, decision.problems
            )
            decision.served.append(Served(offer, position, content))
        if self.request.explain:
            decision.explanation = self._explain(record, choice, arbitration)
        return decision

    # -- steps ------------------------------------------------------------------------------

    def _variant(self) -> tuple[Experiment | None, Variant | None]:
        experiment = self.placement.experiment
        if self.holdout or experiment is None or not experiment.active(self.now):
            return None, None
        return experiment, assign(experiment, self.request.unit)

    def _candidates(self, variant: Variant | None) -> list[Offer]:
        placement = self.placement
        now_s = self.now.timestamp()
        exposures = self.profile.exposures if self.profile else {}
        counters = self.d._counters() if placement.counted else {}
        reason = self._placement_closed(exposures, counters, now_s)
        if reason:
            self.filtered = {o.id: reason for o in placement.offers}
            return []
        allowed = set(variant.offers) if variant and variant.offers else None
        default = placement.definition.default_offer
        channel = self.request.channel
        now = self.now
        stored = self.memo.eligible if self.memo else None
        checked: dict[str, bool] = {}  # this decision's results of rules that read more
        data = self.data
        found = []
        for offer in placement.offers:
            d = offer.definition
            predicate = offer.predicate
            if self.holdout and offer.id != default:
                why = "holdout"
            elif (d.start is not None or d.end is not None) and not offer.live(now):
                why = "inactive"
            elif offer.channels and channel not in offer.channels:
                why = "channel"
            elif allowed is not None and offer.id not in allowed:
                why = "not_in_variant"
            elif predicate is not None and not _eligible(
                stored if offer.profile_only and stored is not None else checked, offer, data
            ):
                why = "ineligible"
            elif offer.caps and not within_profile_caps(offer.caps, exposures.get(offer.id), now_s):
                why = "frequency_cap"
            elif offer.budget is not None and not within_counter(
                offer.budget, "offer", offer.id, counters, now_s
            ):
                why = "budget"
            else:
                found.append(offer)
                continue
            self.filtered[offer.id] = why
        return found

    def _placement_closed(
        self, exposures: Mapping[str, list[int]], counters: Mapping[str, int], now_s: float
    ) -> str | None:
        placement = self.placement
        channels = placement.definition.channels
        if channels and self.request.channel not in channels:
            return "placement_channel"
        key = f"placement:{placement.id}"
        if not within_profile_caps(placement.caps, exposures.get(key), now_s):
            return "placement_frequency_cap"
        for cap in placement.limits:
            if not within_counter(cap, "placement", placement.id, counters, now_s):
                return "placement_limit"
        return None

    def _features(self) -> tuple[dict[str, float], Vector]:
        """The flattened features of the placement's paths and their vector: those of stored
        profile state are flattened and hashed once per profile state, the others (context,
        computed traits) each time."""
        placement = self.placement
        hasher = placement.hasher
        stored_paths, live_paths = placement.feature_paths
        stored = self.memo.features.get(placement.id) if self.memo else None
        if stored is None:
            flat = _flatten_paths(self.data, stored_paths)
            stored = (flat, hasher.encode(flat))
            if self.memo:
                self.memo.features[placement.id] = stored
        live = _flatten_paths(self.data, live_paths)
        return {**stored[0], **live}, hasher.vector(stored[1], hasher.encode(live))

    def _arbitrate(
        self, arbitration: str, candidates: list[Offer], context: Vector
    ) -> tuple[str, Choice | None]:
        if not candidates:
            return arbitration, None
        if arbitration == "bandit":
            bandit = self.placement.definition.bandit
            policy = self.d._models.policy(self.placement)
            return f"bandit:{bandit.algorithm}", policy.choose(context, [o.id for o in candidates])
        if arbitration == "pvl":
            return "pvl", self._pvl(candidates, context)
        return "priority", _fixed(candidates)

    def _pvl(self, candidates: list[Offer], context: Vector) -> Choice:
        """Propensity x value x lever: the learnt propensity (around each offer's prior),
        the offer's business value and its lever, times the placement's lever per tag."""
        model = self.d._models.propensity(self.placement)
        learnt = model.predict(context, [o.id for o in candidates])
        levers = self.placement.definition.levers
        scores: dict[str, float] = {}
        for offer in candidates:
            d = offer.definition
            propensity = min(1.0, max(0.0, d.propensity + learnt[offer.id]))
            lever = d.lever
            for tag in d.tags:
                lever *= levers.get(tag, 1.0)
            scores[offer.id] = propensity * d.value * lever
        ranking = sorted(scores, key=lambda o: -scores[o])  # stable: priority order on ties
        return Choice(ranking, {o: 1.0 if o == ranking[0] else 0.0 for o in ranking}, scores)

    def _shadow(
        self, candidates: list[Offer], context: Vector, served: str | None
    ) -> ShadowChoice | None:
        shadow = self.placement.definition.shadow
        if shadow is None or not candidates or self.holdout:
            return None
        choice = self.d._models.shadow(self.placement).choose(context, [o.id for o in candidates])
        first = choice.ranking[0]
        kept = {first, served} if served else {first}
        probabilities = {o: choice.probabilities[o] for o in kept}
        return ShadowChoice(f"bandit:{shadow.algorithm}", first, probabilities)

    def _variables(self) -> dict[str, Any]:
        """What content templates may read: the request's context, the placement, and only
        the profile fields the placement exposes."""
        exposed: dict[str, Any] = {}
        for path in self.placement.definition.expose:
            value = _read(self.data, path)
            if isinstance(value, set):
                value = sorted(value)
            _put(exposed, path.split("."), value)
        return {
            "profile": exposed,
            "context": self.request.context,
            "placement": {"id": self.placement.id},
        }

    def _explain(
        self, record: DecisionRecord, choice: Choice | None, arbitration: str
    ) -> dict[str, Any]:
        scores = choice.scores if choice else {}
        rows = []
        for offer in self.placement.offers:
            reason = self.filtered.get(offer.id)
            rows.append(
                {
                    "offer": offer.id,
                    "status": "filtered" if reason else "eligible",
                    "reason": reason,
                    "score": scores.get(offer.id),
                    "probability": choice.probabilities.get(offer.id) if choice else None,
                    "served": any(c.offer == offer.id for c in record.chosen),
                }
            )
        return {
            "arbitration": arbitration,
            "policy": record.policy,
            "experiment": record.experiment,
            "variant": record.variant,
            "features": record.features,
            "candidates": rows,
            "shadow": (
                {"policy": record.shadow.policy, "offer": record.shadow.offer}
                if record.shadow
                else None
            ),
        }


def _flatten_paths(data: Mapping[str, Any], paths: FeaturePaths) -> dict[str, float]:
    features: dict[str, float] = {}
    for path, parts in paths:
        found: dict[str, float] = {}
        try:
            flatten_into(found, path, lookup(data, parts))
        except TypeError:  # not a JSON-like value (a date): not a feature
            continue
        features.update(found)
    return features


def _eligible(results: dict[str, bool], offer: Offer, data: Mapping[str, Any]) -> bool:
    """The offer's eligibility, from ``results`` (by rule text) when an offer with the same
    rule was checked against the same data."""
    result = results.get(offer.rule_text)
    if result is None:
        assert offer.predicate is not None
        result = results[offer.rule_text] = offer.predicate(data)
    return result


def _fixed(candidates: Sequence[Offer]) -> Choice | None:
    """Priority order, deterministic: the first has probability 1."""
    if not candidates:
        return None
    ranking = [o.id for o in candidates]
    return Choice(
        ranking,
        {o: 1.0 if i == 0 else 0.0 for i, o in enumerate(ranking)},
        {o.id: float(o.definition.priority) for o in candidates},
    )


def _read(data: Mapping[str, Any], path: str) -> Any:
    return lookup(data, tuple(path.split(".")))


def _put(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _offer_vars(offer: Offer) -> dict[str, Any]:
    return {"id": offer.id, "name": offer.definition.name, "value": offer.definition.value}
