"""Evaluating segments against one profile and turning the result into membership changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from relevo.profiles.model import Profile
from relevo.segments.changes import MembershipChange
from relevo.segments.model import Segment


def rule_data(profile: Profile, computed: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What a segment rule reads of a profile."""
    return {
        "traits": profile.trait_values(),
        "computed": computed,
        "profile": {
            "id": profile.id,
            "created_at": profile.created_at,
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "events_applied": profile.events_applied,
            "event_counts": profile.event_counts,
            "type_counts": profile.type_counts,
            "consent": {k: s.value for k, s in profile.consent.items()},
            "context": {k: s.value for k, s in profile.context.items()},
        },
        "now": now,
    }


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
        member = segment.rule.evaluate(data)
        if member:
            if name not in current:
                current[name] = at
                changes.append(MembershipChange(profile.id, name, True, at, cause))
        elif name in current:
            del current[name]
            changes.append(MembershipChange(profile.id, name, False, at, cause))
    return changes
