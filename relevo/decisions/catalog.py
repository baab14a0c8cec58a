"""The catalog: placements, offers and experiments, as definitions and in compiled form.

Definitions are data (YAML files or the admin API); compiling one checks everything a decision
will rely on (the eligibility rule, the content templates, caps, the bandit's settings), so a
bad definition is refused when it is saved, with the field and the reason, never at decide time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec

from relevo.content.templates import ContentTemplate, compile_content
from relevo.decisions.caps import Cap, CapDefinition, compile_cap
from relevo.decisions.experiments import Experiment
from relevo.errors import ErrorDetail, ValidationError
from relevo.learning.bandits import ALGORITHMS
from relevo.learning.features import FeatureHasher
from relevo.profiles.computed_defs import parse_window
from relevo.rules import Rule, compile_rule

# Eligibility reads the profile and the request's context; not an event (there is none).
ELIGIBILITY_ROOTS = frozenset({"traits", "computed", "profile", "context", "segments"})
# What eligibility reads of a profile that changes only when the profile does
STORED_ROOTS = frozenset({"traits", "profile", "segments"})
# What content templates may read of a profile, when allowlisted by path.
EXPOSABLE_ROOTS = ("traits", "computed", "segments", "profile")
# What a bandit's features are built from: JSON-like values only (not the profile's dates).
FEATURE_ROOTS = ("traits", "computed", "segments", "context")
FeaturePaths = tuple[tuple[str, tuple[str, ...]], ...]  # (path, its dotted parts)
ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
Arbitration = Literal["priority", "pvl", "bandit"]
Reward = Literal["click", "conversion"]
FEEDBACK_EVENTS = {"impression": "Offer Viewed", "click": "Offer Clicked"}
CONVERSION_EVENT = "Offer Converted"


class BanditDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    algorithm: str = "lints"
    alpha: float = 0.1  # LinUCB's exploration bonus: small, rewards are rare
    epsilon: float = 0.05
    noise: float = 0.1  # linear Thompson sampling's posterior scale
    floor: float = 0.1  # every eligible offer keeps at least floor / n of probability
    ridge: float = 1.0
    seed: int = 0
    dim: int = 32
    features: list[str] = msgspec.field(
        default_factory=lambda: ["segments", "context.device.type", "context.channel"]
    )
    interactions: list[tuple[str, str]] = msgspec.field(default_factory=list)


class PlacementDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    description: str = ""
    channels: list[str] = msgspec.field(default_factory=list)  # empty: any channel
    max_offers: int = 1
    arbitration: Arbitration = "priority"
    bandit: BanditDefinition = msgspec.field(default_factory=BanditDefinition)
    shadow: BanditDefinition | None = None  # decides and logs alongside, never served
    levers: dict[str, float] = msgspec.field(default_factory=dict)  # offer tag -> weight (pvl)
    default_offer: str | None = None  # what the holdout group (and an empty result) gets
    frequency_caps: list[CapDefinition] = msgspec.field(default_factory=list)  # per profile
    limits: list[CapDefinition] = msgspec.field(default_factory=list)  # over all profiles
    expose: list[str] = msgspec.field(default_factory=list)  # profile paths content may read
    reward: Reward = "click"
    conversion_events: list[str] = msgspec.field(default_factory=list)
    attribution_window: str = "1d"


class OfferDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    placements: list[str]
    name: str = ""
    channels: list[str] = msgspec.field(default_factory=list)  # empty: any channel
    content: Any = None
    eligibility: str | dict[str, Any] | None = None
    start: datetime | None = None
    end: datetime | None = None
    priority: int = 0
    value: float = 1.0  # business value of a conversion
    lever: float = 1.0  # a business weight (pvl)
    propensity: float = 0.01  # prior propensity until the model has learnt the offer
    tags: list[str] = msgspec.field(default_factory=list)
    frequency_caps: list[CapDefinition] = msgspec.field(default_factory=list)  # per profile
    budget: CapDefinition | None = None  # impressions over all profiles


class CatalogDefinitions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    placements: list[PlacementDefinition] = msgspec.field(default_factory=list)
    offers: list[OfferDefinition] = msgspec.field(default_factory=list)
    experiments: list[Experiment] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Offer:
    definition: OfferDefinition
    eligibility: Rule | None
    content: ContentTemplate
    caps: tuple[Cap, ...]
    budget: Cap | None
    # read per decision, so kept at hand: the id, the channels, the eligibility predicate, its
    # canonical text (offers sharing a rule evaluate it once a decision) and whether it reads
    # only stored profile state (then its result holds until the profile changes; not computed
    # traits, whose windows slide with time, nor the request's context)
    id: str = field(init=False)
    channels: frozenset[str] = field(init=False)
    predicate: Callable[[Mapping[str, Any]], bool] | None = field(init=False)
    rule_text: str = field(init=False)
    profile_only: bool = field(init=False)

    def __post_init__(self) -> None:
        rule = self.eligibility
        object.__setattr__(self, "id", self.definition.id)
        object.__setattr__(self, "channels", frozenset(self.definition.channels))
        object.__setattr__(self, "predicate", rule.predicate if rule else None)
        object.__setattr__(self, "rule_text", rule.text if rule else "")
        object.__setattr__(
            self,
            "profile_only",
            rule is not None
            and not rule.uses_now
            and all(f.split(".", 1)[0] in STORED_ROOTS for f in rule.fields),
        )

    def live(self, now: datetime) -> bool:
        d = self.definition
        return (d.start is None or d.start <= now) and (d.end is None or now < d.end)


@dataclass(frozen=True)
class Placement:
    definition: PlacementDefinition
    offers: tuple[Offer, ...]  # priority order: priority, then value, both descending
    caps: tuple[Cap, ...]
    limits: tuple[Cap, ...]
    hasher: FeatureHasher
    attribution_seconds: int
    experiment: Experiment | None
    id: str = field(init=False)
    # the bandit's feature paths, each with its parts: of stored profile state, and the others
    # (context, computed)
    feature_paths: tuple[FeaturePaths, FeaturePaths] = field(init=False)
    counted: bool = field(init=False)  # whether a limit or a budget reads impression counters
    # digests of the bandit's and the shadow's settings: a changed setting is a new model
    bandit_digest: str = field(init=False)
    shadow_digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.definition.id)
        paths = self.definition.bandit.features
        split = [(p, tuple(p.split("."))) for p in paths]
        stored = tuple(path for path in split if path[1][0] in STORED_ROOTS)
        live = tuple(path for path in split if path[1][0] not in STORED_ROOTS)
        object.__setattr__(self, "feature_paths", (stored, live))
        counted = bool(self.limits) or any(o.budget is not None for o in self.offers)
        object.__setattr__(self, "counted", counted)
        object.__setattr__(self, "bandit_digest", _digest(self.definition.bandit))
        object.__setattr__(self, "shadow_digest", _digest(self.definition.shadow))


@dataclass(frozen=True)
class Catalog:
    placements: dict[str, Placement]
    offers: dict[str, Offer]
    experiments: dict[str, Experiment]
    version: str

    @staticmethod
    def empty() -> Catalog:
        return compile_catalog(CatalogDefinitions())


def _digest(settings: BanditDefinition | None) -> str:
    return hashlib.sha256(msgspec.json.encode(settings)).hexdigest()[:12]


def _fail(where: str, message: str) -> ValidationError:
    return ValidationError(f"{where}: {message}", details=[ErrorDetail(where, message, "invalid")])


def _check_id(kind: str, value: str, where: str) -> None:
    if not ID.match(value):
        raise _fail(f"{where}.id", f"{kind} id {value!r} must be 1-64 of a-z, 0-9, _ and -")


def compile_offer(definition: OfferDefinition, where: str = "offer") -> Offer:
    _check_id("offer", definition.id, where)
    d = definition
    if not d.placements:
        raise _fail(f"{where}.placements", "an offer needs at least one placement")
    if d.start and d.end and d.end <= d.start:
        raise _fail(f"{where}.end", "end must be after start")
    if not 0 <= d.propensity <= 1:
        raise _fail(f"{where}.propensity", "a propensity is between 0 and 1")
    try:
        eligibility = (
            compile_rule(d.eligibility, roots=ELIGIBILITY_ROOTS) if d.eligibility else None
        )
    except ValidationError as exc:
        raise ValidationError(f"{where}.eligibility: {exc.message}", details=exc.details) from exc
    caps = _caps(d.frequency_caps, f"{where}.frequency_caps", per_profile=True)
    budget = compile_cap(d.budget, per_profile=False, where=f"{where}.budget") if d.budget else None
    content = compile_content(d.content, where=f"{where}.content")
    return Offer(d, eligibility, content, caps, budget)


def compile_placement(
    definition: PlacementDefinition,
    offers: Iterable[Offer],
    experiment: Experiment | None,
    where: str = "placement",
) -> Placement:
    d = definition
    _check_id("placement", d.id, where)
    if not 1 <= d.max_offers <= 50:
        raise _fail(f"{where}.max_offers", "max_offers is between 1 and 50")
    for name, bandit in (("bandit", d.bandit), ("shadow", d.shadow)):
        if bandit is not None:
            _check_bandit(bandit, f"{where}.{name}")
    for path in d.expose:
        if path.split(".", 1)[0] not in EXPOSABLE_ROOTS:
            raise _fail(f"{where}.expose", f"{path!r} must start with one of {EXPOSABLE_ROOTS}")
    try:
        window = parse_window(d.attribution_window)
    except ValueError as exc:
        raise _fail(f"{where}.attribution_window", str(exc)) from exc
    if window is None:
        raise _fail(f"{where}.attribution_window", "an attribution window cannot be lifetime")
    caps = _caps(d.frequency_caps, f"{where}.frequency_caps", per_profile=True)
    limits = _caps(d.limits, f"{where}.limits", per_profile=False)
    ordered = sorted(offers, key=lambda o: (-o.definition.priority, -o.definition.value, o.id))
    hasher = FeatureHasher(d.bandit.dim, [(a, b) for a, b in d.bandit.interactions])
    return Placement(d, tuple(ordered), caps, limits, hasher, window.seconds, experiment)


def _caps(definitions: list[CapDefinition], where: str, *, per_profile: bool) -> tuple[Cap, ...]:
    return tuple(
        compile_cap(d, per_profile=per_profile, where=f"{where}[{i}]")
        for i, d in enumerate(definitions)
    )


def _check_bandit(bandit: BanditDefinition, where: str) -> None:
    if bandit.algorithm not in ALGORITHMS:
        raise _fail(f"{where}.algorithm", f"use one of {', '.join(ALGORITHMS)}")
    if not 0 <= bandit.floor <= 1:
        raise _fail(f"{where}.floor", "the probability floor is between 0 and 1")
    if not 4 <= bandit.dim <= 4096:
        raise _fail(f"{where}.dim", "the feature dimension is between 4 and 4096")
    for name in ("alpha", "epsilon", "noise", "ridge"):
        if getattr(bandit, name) < 0:
            raise _fail(f"{where}.{name}", "must not be negative")
    if bandit.ridge <= 0:
        raise _fail(f"{where}.ridge", "the ridge must be positive")
    for path in bandit.features:
        if path.split(".", 1)[0] not in FEATURE_ROOTS:
            raise _fail(f"{where}.features", f"{path!r} must start with one of {FEATURE_ROOTS}")


def compile_catalog(definitions: CatalogDefinitions) -> Catalog:
    """Compile and cross-check everything: offers name existing placements, a placement's
    default offer is one of its offers, at most one live experiment per placement."""
    offers: dict[str, Offer] = {}
    for i, definition in enumerate(definitions.offers):
        offer = compile_offer(definition, f"offers[{i}]")
        if offer.id in offers:
            raise _fail(f"offers[{i}].id", f"offer {offer.id!r} is defined twice")
        offers[offer.id] = offer
    placement_ids = {p.id for p in definitions.placements}
    for i, offer in enumerate(offers.values()):
        unknown = set(offer.definition.placements) - placement_ids
        if unknown:
            raise _fail(f"offers[{i}].placements", f"unknown placement(s): {sorted(unknown)}")
    experiments: dict[str, Experiment] = {}
    by_placement: dict[str, Experiment] = {}
    for i, experiment in enumerate(definitions.experiments):
        if experiment.id in experiments:
            raise _fail(f"experiments[{i}].id", f"experiment {experiment.id!r} is defined twice")
        if experiment.placement not in placement_ids:
            raise _fail(
                f"experiments[{i}].placement", f"unknown placement {experiment.placement!r}"
            )
        if experiment.placement in by_placement:
            raise _fail(
                f"experiments[{i}].placement",
                f"placement {experiment.placement!r} already has experiment "
                f"{by_placement[experiment.placement].id!r}",
            )
        experiments[experiment.id] = experiment
        by_placement[experiment.placement] = experiment
    placements: dict[str, Placement] = {}
    for i, placement in enumerate(definitions.placements):
        if placement.id in placements:
            raise _fail(f"placements[{i}].id", f"placement {placement.id!r} is defined twice")
        mine = [o for o in offers.values() if placement.id in o.definition.placements]
        if placement.default_offer and placement.default_offer not in {o.id for o in mine}:
            raise _fail(
                f"placements[{i}].default_offer",
                f"{placement.default_offer!r} is not an offer of this placement",
            )
        placements[placement.id] = compile_placement(
            placement, mine, by_placement.get(placement.id), f"placements[{i}]"
        )
    digest = hashlib.sha256(msgspec.json.encode(definitions)).hexdigest()[:16]
    return Catalog(placements, offers, experiments, digest)


def parse_definitions(data: Any, where: str = "$") -> CatalogDefinitions:
    """Catalog definitions from decoded YAML/JSON (``placements``, ``offers``,
    ``experiments`` lists). Raises ValidationError naming the bad field."""
    try:
        return msgspec.convert(data or {}, CatalogDefinitions)
    except msgspec.ValidationError as exc:
        raise ValidationError(
            f"invalid catalog definition: {exc}",
            details=[ErrorDetail(where, str(exc), "invalid_definition")],
        ) from exc
