"""Destination definitions and which outbox effects each one receives."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec

from relevo.errors import ErrorDetail, ValidationError

NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
ALL = "*"


class DestinationDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    type: Literal["webhook", "audience"]
    url: str
    # what it receives: event names or types ("Order Completed", "identify", "*"), and the
    # segments whose Segment Entered/Exited changes it receives ("*" for all)
    events: list[str] = []
    segments: list[str] = []
    # consent purposes a profile must have granted for anything of it to be sent
    consent: list[str] = []
    secret: str | None = None  # webhook signing secret (whsec_...), generated when absent
    platform: Literal["google", "meta"] | None = None  # audience hashing rules
    enabled: bool = True

    def wants_segment(self, segment: str) -> bool:
        return ALL in self.segments or segment in self.segments

    def wants_event(self, event_type: str, name: str | None) -> bool:
        return (
            ALL in self.events
            or event_type in self.events
            or (name is not None and name in self.events)
        )


def parse_destination(data: Any) -> DestinationDefinition:
    try:
        definition = msgspec.convert(data, DestinationDefinition)
    except msgspec.ValidationError as exc:
        raise ValidationError(
            f"invalid destination: {exc}", details=[ErrorDetail("$", str(exc), "invalid")]
        ) from exc
    if not NAME.match(definition.name):
        raise ValidationError(f"destination name {definition.name!r} must be 1-64 of a-z0-9_-")
    if definition.type == "audience":
        if definition.platform is None:
            raise ValidationError("an audience destination needs a platform: google or meta")
        if definition.events:
            raise ValidationError("an audience destination receives segment changes, not events")
    if not definition.events and not definition.segments:
        raise ValidationError("a destination must subscribe to events, segments or both")
    return definition


def webhook_id(destination: str, outbox_id: int) -> str:
    """Stable per (effect, destination): retries and replays carry the same id."""
    digest = hashlib.blake2b(f"{destination}\x1f{outbox_id}".encode(), digest_size=12)
    return f"msg_{digest.hexdigest()}"
