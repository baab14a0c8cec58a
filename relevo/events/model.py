"""The normalised event, as stored in the event log and read by the processor.

It keeps the Segment field names on the wire (``messageId``, ``userId`` ...) so a stored event
reads like the call a client made, plus what the collector added: ``receivedAt``, the corrected
``timestamp``, the ``source`` it came from and the flag for a server-minted ``messageId``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

EventType = Literal["track", "identify", "page", "screen", "group", "alias"]
EVENT_TYPES: frozenset[str] = frozenset({"track", "identify", "page", "screen", "group", "alias"})


# gc=False: events never take part in reference cycles, so the collector need not track them
class Event(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", gc=False):
    type: EventType
    message_id: str
    source: str
    received_at: datetime
    timestamp: datetime
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    anonymous_id: str | None = None
    user_id: str | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    integrations: dict[str, Any] = msgspec.field(default_factory=dict)
    channel: str | None = None
    message_id_minted: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(payload: bytes) -> Event:
    return _decoder.decode(payload)


def same_call(first: bytes, second: bytes) -> bool:
    """Whether two stored events record the same client call (a retry), ignoring what the
    collector added on receipt (``receivedAt``, ``sentAt`` and the corrected ``timestamp``)."""
    if first == second:
        return True
    a, b = decode_event(first), decode_event(second)
    return (
        msgspec.structs.replace(
            a, received_at=b.received_at, sent_at=b.sent_at, timestamp=b.timestamp
        )
        == b
    )
