"""Profile state: what Relevo knows of one customer, as the processor keeps it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from relevo.profiles.computed_state import TraitState


class Stamped(msgspec.Struct, array_like=True, gc=False):  # no cycles: untracked by the GC
    """A value with the event time and the event that set it (last write wins by ``at``)."""

    value: Any
    at: datetime
    message_id: str

    def newer_than(self, other: Stamped) -> bool:
        # ties broken by message id, so replays and merges decide the same way every time
        if self.at != other.at:
            return self.at > other.at
        return self.message_id > other.message_id


EXPOSURES_KEPT = 50  # recent impressions kept per offer (and per placement) for frequency caps


class Touch(msgspec.Struct, array_like=True, gc=False):
    """A click on an offer: a later conversion within the attribution window is credited to
    its decision."""

    decision_id: str
    offer: str
    at: datetime


class Profile(msgspec.Struct, kw_only=True, gc=False):  # no cycles: untracked by the GC
    id: str
    created_at: datetime
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    traits: dict[str, Stamped] = msgspec.field(default_factory=dict)
    event_counts: dict[str, int] = msgspec.field(default_factory=dict)
    type_counts: dict[str, int] = msgspec.field(default_factory=dict)
    consent: dict[str, Stamped] = msgspec.field(default_factory=dict)
    context: dict[str, Stamped] = msgspec.field(default_factory=dict)
    groups: dict[str, Stamped] = msgspec.field(default_factory=dict)
    events_applied: int = 0
    timeline_size: int = 0
    merged_from: list[str] = msgspec.field(default_factory=list)
    segments: dict[str, datetime] = msgspec.field(default_factory=dict)  # name -> entered at
    next_check: datetime | None = None  # when its time-dependent segments are due again
    computed: dict[str, TraitState] = msgspec.field(default_factory=dict)  # computed traits
    # unix seconds of recent impressions, oldest first, by offer id and by "placement:<id>"
    exposures: dict[str, list[int]] = msgspec.field(default_factory=dict)
    touches: dict[str, Touch] = msgspec.field(default_factory=dict)  # placement -> last click

    def trait_values(self) -> dict[str, Any]:
        return {name: stamped.value for name, stamped in self.traits.items()}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Profile)


def encode_profile(profile: Profile) -> bytes:
    return _encoder.encode(profile)


def decode_profile(payload: bytes) -> Profile:
    return _decoder.decode(payload)
