"""A profile entering or leaving a segment: the effect that destinations and journeys act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class MembershipChange:
    profile_id: str
    segment: str
    entered: bool  # False: exited
    at: datetime
    cause: str  # the message id of the event, or "schedule", "backfill", "merged"
