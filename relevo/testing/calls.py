"""Segment-spec calls for tests: ``track`` and ``identify`` as a client would send them."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _ids(call: dict[str, Any], user: str | None, anonymous: str | None) -> dict[str, Any]:
    if user is not None:
        call["userId"] = user
    if anonymous is not None:
        call["anonymousId"] = anonymous
    return call


def track(
    user: str | None,
    message_id: str,
    event: str = "Clicked",
    *,
    anonymous: str | None = None,
    at: datetime | None = None,
    **properties: Any,
) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "track",
        "event": event,
        "messageId": message_id,
        "properties": properties,
    }
    if at is not None:
        call["timestamp"] = at.isoformat()
    return _ids(call, user, anonymous)


def identify(
    user: str | None, message_id: str, *, anonymous: str | None = None, **traits: Any
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "identify", "messageId": message_id, "traits": traits}
    return _ids(call, user, anonymous)
