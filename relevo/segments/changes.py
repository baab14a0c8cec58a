"""A profile entering or leaving a segment: the effect that destinations and journeys act on."""

from __future__ import annotations

from datetime import datetime

import msgspec


class MembershipChange(msgspec.Struct, frozen=True, gc=False):
    """One profile entering or leaving one segment (a struct: the processor makes one per
    change, and a struct is built several times faster than a frozen dataclass)."""

    profile_id: str
    segment: str
    entered: bool  # False: exited
    at: datetime
    cause: str  # the message id of the event, or "schedule", "backfill", "merged"
