"""What clients send: the permissive shapes of a Segment/RudderStack call before normalisation.

Types here are what the official SDKs put on the wire (ids may be numbers, missing ids are
``null``); decoding into these structs is the first validation step and names the bad field.
"""

from __future__ import annotations

from typing import Any

import msgspec

Id = str | int | None
Obj = dict[str, Any] | None


class WireEvent(msgspec.Struct, kw_only=True, rename="camel", gc=False):
    type: str | None = None
    message_id: Id = None
    anonymous_id: Id = None
    user_id: Id = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    group_id: Id = None
    previous_id: Id = None
    properties: Obj = None
    traits: Obj = None
    context: Obj = None
    integrations: Obj = None
    timestamp: str | None = None
    original_timestamp: str | None = None
    sent_at: str | None = None
    channel: str | None = None
    write_key: str | None = None


class WireBatch(msgspec.Struct, kw_only=True, rename="camel"):
    """``/v1/batch`` and ``/v1/import``: events stay raw so each is checked on its own."""

    batch: list[msgspec.Raw]
    sent_at: str | None = None
    write_key: str | None = None
    context: Obj = None
    integrations: Obj = None
