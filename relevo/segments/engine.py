"""Evaluating segments against one profile and turning the result into membership changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from relevo.profiles.model import Profile
from relevo.segments.changes import MembershipChange
from relevo.segments.model import Segment

# the profile facts rules see (``profile.*``): attributes as they are, stamped maps by value
PLAIN_FACTS = (
    "id",
    "created_at",
    "first_seen",
    "last_seen",
    "events_applied",
    "event_counts",
    "type_counts",
)
STAMPED_FACTS = ("consent", "context")


@dataclass(frozen=True)
class DataShape:
    """The parts of what rules read of a profile (:func:`rule_data`) that some rules read.
    Building only those is cheaper, and the rules cannot tell: they read the same values, and
    nothing else."""

    traits: bool
    plain: tuple[str, ...]
    stamped: tuple[str, ...]
    _get: Callable[[Profile], tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get = attrgetter(*self.plain) if self.plain else (lambda p: ())
        # attrgetter of one name gives the value, not a 1-tuple
        getter = get if len(self.plain) != 1 else (lambda p: (get(p),))
        object.__setattr__(self, "_get", getter)

    @classmethod
    def read_by(cls, segments: Iterable[Segment]) -> DataShape:
        traits = False
        facts: set[str] = set()
        for segment in segments:
            for path in segment.rule.fields:
                root, _, key = path.partition(".")
                if root == "traits":
                    traits = True
                elif root == "profile":
                    facts.update({key} if key else (*PLAIN_FACTS, *STAMPED_FACTS))
        return cls(
            traits,
            tuple(f for f in PLAIN_FACTS if f in facts),
            tuple(f for f in STAMPED_FACTS if f in facts),
        )

    def data(self, profile: Profile, computed: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        facts = dict(zip(self.plain, self._get(profile), strict=True))
        for name in self.stamped:
            stamped: dict[str, Any] = getattr(profile, name)
            facts[name] = {k: s.value for k, s in stamped.items()}
        return {
            "traits": profile.trait_values() if self.traits else {},
            "computed": computed,
            "profile": facts,
            "now": now,
        }


EVERYTHING = DataShape(True, PLAIN_FACTS, STAMPED_FACTS)


def rule_data(profile: Profile, computed: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What a segment rule reads of a profile."""
    return EVERYTHING.data(profile, computed, now)


def reevaluate(
    profile: Profile,
    segments: Iterable[Segment],
    data: Mapping[str, Any],
    at: datetime,
    cause: str,
) -> list[MembershipChange]:
    """Evaluate ``segments`` and apply the result to ``profile.segments``; return the changes."""
    changes: list[MembershipChange] = []
    current = profile.segments
    for segment in segments:
        name = segment.name
        if segment.rule.predicate(data):
            if name not in current:
                current[name] = at
                changes.append(MembershipChange(profile.id, name, True, at, cause))
        elif name in current:
            del current[name]
            changes.append(MembershipChange(profile.id, name, False, at, cause))
    return changes
