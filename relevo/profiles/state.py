"""Applying events to a profile, and merging two profiles. Pure functions over ``Profile``.

Everything here is commutative where the spec allows it: counters add, first/last seen take
min/max, traits, consent and context facts are last-write-wins by event time. So the order in
which two histories meet (a merge, a replay) does not change the result.
"""

from __future__ import annotations

from typing import Any

from relevo.events.model import Event
from relevo.profiles.computed import merge_computed
from relevo.profiles.model import EXPOSURES_KEPT, Profile, Stamped

# context facts kept on the profile: the key in event.context -> the name on the profile
CONTEXT_FACTS: dict[str, str] = {
    "device": "device",
    "os": "os",
    "app": "app",
    "userAgent": "user_agent",
    "locale": "locale",
    "timezone": "timezone",
    "ip": "ip",
    "library": "library",
}
LOCATION_FACTS: dict[str, str] = {"country": "country", "city": "city"}


def apply_event(profile: Profile, event: Event) -> None:
    """Fold one event into the profile state."""
    at = event.timestamp
    if profile.first_seen is None or at < profile.first_seen:
        profile.first_seen = at
    if profile.last_seen is None or at > profile.last_seen:
        profile.last_seen = at
    profile.events_applied += 1
    profile.type_counts[event.type] = profile.type_counts.get(event.type, 0) + 1
    if event.type == "track" and event.event:
        profile.event_counts[event.event] = profile.event_counts.get(event.event, 0) + 1
    elif event.type in ("page", "screen") and event.name:
        key = f"{event.type}:{event.name}"
        profile.event_counts[key] = profile.event_counts.get(key, 0) + 1

    if event.type == "identify":
        for name, value in event.traits.items():
            _stamp(profile.traits, name, Stamped(value, at, event.message_id))
    elif event.type == "group" and event.group_id is not None:
        _stamp(profile.groups, event.group_id, Stamped(event.traits, at, event.message_id))

    for purpose, granted in consent_of(event.context).items():
        _stamp(profile.consent, purpose, Stamped(granted, at, event.message_id))
    for key, value in event.context.items():
        fact = CONTEXT_FACTS.get(key)
        if fact is not None and value is not None and value not in ("", {}):
            _stamp(profile.context, fact, Stamped(value, at, event.message_id))
    location = event.context.get("location")
    if isinstance(location, dict):
        for key, fact in LOCATION_FACTS.items():
            value = location.get(key)
            if value is not None and value != "":
                _stamp(profile.context, fact, Stamped(value, at, event.message_id))


def merge_into(survivor: Profile, merged: Profile) -> None:
    """Fold the state of ``merged`` into ``survivor`` (``merged`` is then retired)."""
    for when in (merged.first_seen, merged.last_seen):
        if when is None:
            continue
        if survivor.first_seen is None or when < survivor.first_seen:
            survivor.first_seen = when
        if survivor.last_seen is None or when > survivor.last_seen:
            survivor.last_seen = when
    for mine, theirs in (
        (survivor.event_counts, merged.event_counts),
        (survivor.type_counts, merged.type_counts),
    ):
        for key, count in theirs.items():
            mine[key] = mine.get(key, 0) + count
    for mine_stamped, theirs_stamped in (
        (survivor.traits, merged.traits),
        (survivor.consent, merged.consent),
        (survivor.context, merged.context),
        (survivor.groups, merged.groups),
    ):
        for key, stamped in theirs_stamped.items():
            _stamp(mine_stamped, key, stamped)
    merge_computed(survivor, merged)
    for key, shown in merged.exposures.items():
        survivor.exposures[key] = sorted([*survivor.exposures.get(key, []), *shown])[
            -EXPOSURES_KEPT:
        ]
    for placement, touch in merged.touches.items():
        kept = survivor.touches.get(placement)
        if kept is None or touch.at > kept.at:
            survivor.touches[placement] = touch
    survivor.events_applied += merged.events_applied
    survivor.timeline_size += merged.timeline_size
    survivor.merged_from.extend([merged.id, *merged.merged_from])


def consent_of(context: dict[str, Any]) -> dict[str, bool]:
    """Consent per purpose, from Segment's or RudderStack's consent context."""
    found: dict[str, bool] = {}
    consent = context.get("consent")
    if isinstance(consent, dict):
        preferences = consent.get("categoryPreferences")
        if isinstance(preferences, dict):
            for purpose, granted in preferences.items():
                if isinstance(granted, bool):
                    found[str(purpose)] = granted
    management = context.get("consentManagement")
    if isinstance(management, dict):
        for key, granted in (("allowedConsentIds", True), ("deniedConsentIds", False)):
            ids = management.get(key)
            if isinstance(ids, list):
                for purpose in ids:
                    if isinstance(purpose, str | int):
                        found[str(purpose)] = granted
    return found


def _stamp(into: dict[str, Stamped], key: str, stamped: Stamped) -> None:
    current = into.get(key)
    if current is None or stamped.newer_than(current):
        into[key] = stamped
