"""Turn a client's call into a stored ``Event``: validate, fill in, correct the clock.

The rules follow Segment's tracking spec, as the official SDKs actually use it:

- ids may be numbers (kept as strings) or ``null``/missing; one of ``userId``/``anonymousId``
  is required (``alias`` needs ``userId`` and ``previousId``);
- identify traits arrive as ``traits`` or in ``context.traits`` (RudderStack); both are merged,
  the top-level ones winning;
- the client time is ``timestamp`` or, failing that, ``originalTimestamp`` (RudderStack's
  browser SDK); with ``sentAt`` the device clock's skew is corrected, as Segment does:
  ``timestamp = receivedAt - (sentAt - originalTimestamp)``;
- a call without a ``messageId`` gets a server-minted one, flagged, so it is never deduplicated.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from relevo.errors import ErrorDetail
from relevo.events.model import EVENT_TYPES, Event
from relevo.events.timestamps import parse_timestamp
from relevo.events.wire import WireEvent

MAX_ID_LENGTH = 1024
MAX_NAME_LENGTH = 1024

_wire_decoder = msgspec.json.Decoder(WireEvent)


@dataclass(frozen=True)
class Limits:
    max_event_bytes: int
    max_nesting_depth: int


@dataclass(frozen=True)
class BatchDefaults:
    """What a batch envelope lends to each of its events."""

    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class EventRejected(Exception):
    """One event failed validation; ``details`` say where and why."""

    def __init__(self, details: list[ErrorDetail]) -> None:
        super().__init__("; ".join(f"{d.location}: {d.message}" for d in details))
        self.details = details


def decode_wire_event(raw: bytes, where: str, limits: Limits) -> WireEvent:
    """Decode one event's JSON, enforcing its size limit first."""
    if len(raw) > limits.max_event_bytes:
        raise EventRejected(
            [
                ErrorDetail(
                    where or "$",
                    f"event is {len(raw)} bytes, over the limit of {limits.max_event_bytes}",
                    "event_too_large",
                )
            ]
        )
    try:
        return _wire_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise EventRejected(
            [ErrorDetail(_join(where, str(exc)), str(exc), "invalid_type")]
        ) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EventRejected(
            [ErrorDetail(where or "$", f"invalid JSON: {exc}", "invalid_json")]
        ) from exc
    except RecursionError as exc:
        raise EventRejected([ErrorDetail(where or "$", "nesting is too deep", "too_deep")]) from exc


def _join(where: str, message: str) -> str:
    # msgspec says "... - at `$.userId`": lift the path out so it reads batch[3].userId
    _, sep, path = message.rpartition(" - at `$")
    path = path.rstrip("`") if sep else ""
    return f"{where}{path}" if where else (f"${path}" if path else "$")


def normalise(
    wire: WireEvent,
    *,
    where: str,
    source: str,
    received_at: datetime,
    limits: Limits,
    implied_type: str | None = None,
    defaults: BatchDefaults = BatchDefaults(),
) -> Event:
    """Validate a decoded call and build the stored event.

    Raises:
        EventRejected: with one detail per problem found.
    """
    problems: list[ErrorDetail] = []

    def bad(field: str, message: str, code: str = "invalid") -> None:
        problems.append(ErrorDetail(f"{where}.{field}" if where else field, message, code))

    event_type = wire.type or implied_type
    if implied_type and wire.type and wire.type != implied_type:
        bad("type", f"is {wire.type!r} but this endpoint takes {implied_type!r} calls")
    elif event_type is None:
        bad("type", "is required in a batch", "missing")
    elif event_type not in EVENT_TYPES:
        bad("type", f"must be one of {sorted(EVENT_TYPES)}, not {event_type!r}")

    user_id = _id(wire.user_id, "userId", bad)
    anonymous_id = _id(wire.anonymous_id, "anonymousId", bad)
    previous_id = _id(wire.previous_id, "previousId", bad)
    group_id = _id(wire.group_id, "groupId", bad)
    message_id = _id(wire.message_id, "messageId", bad)

    # "missing" only when not sent: an id that was sent but is invalid has its own problem
    if event_type == "alias":
        if _blank(wire.user_id):
            bad("userId", "is required for alias", "missing")
        if _blank(wire.previous_id):
            bad("previousId", "is required for alias", "missing")
    elif _blank(wire.user_id) and _blank(wire.anonymous_id):
        bad("userId", "either userId or anonymousId is required", "missing")
    if event_type == "track" and not wire.event:
        bad("event", "is required for track", "missing")
    if event_type == "group" and _blank(wire.group_id):
        bad("groupId", "is required for group", "missing")
    for field, text in (("event", wire.event), ("name", wire.name), ("category", wire.category)):
        if text is not None and len(text) > MAX_NAME_LENGTH:
            bad(field, f"is longer than {MAX_NAME_LENGTH} characters", "too_long")

    context = _merged(defaults.context, wire.context)
    integrations = _merged(defaults.integrations, wire.integrations)
    for field, value in (
        ("properties", wire.properties),
        ("traits", wire.traits),
        # the merged ones: a batch envelope's context/integrations must not bypass the limit
        ("context", context),
        ("integrations", integrations),
    ):
        if value and _too_deep(value, limits.max_nesting_depth):
            bad(field, f"nests deeper than {limits.max_nesting_depth} levels", "too_deep")

    original, sent_at, timestamp = _times(wire, defaults, received_at, bad)

    if problems:
        raise EventRejected(problems)

    traits = wire.traits or {}
    if event_type == "identify":
        context_traits = context.get("traits")
        if isinstance(context_traits, dict) and context_traits:
            traits = {**context_traits, **traits}

    minted = message_id is None
    return Event(
        type=event_type,  # type: ignore[arg-type]  # checked against EVENT_TYPES above
        message_id=message_id or f"relevo-{uuid.uuid4()}",
        message_id_minted=minted,
        source=source,
        received_at=received_at,
        timestamp=timestamp,
        original_timestamp=original,
        sent_at=sent_at,
        anonymous_id=anonymous_id,
        user_id=user_id,
        event=wire.event,
        name=wire.name,
        category=wire.category,
        group_id=group_id,
        previous_id=previous_id,
        properties=wire.properties or {},
        traits=traits,
        context=context,
        integrations=integrations,
        channel=wire.channel,
    )


def _blank(value: str | int | None) -> bool:
    return value is None or value == ""


def _id(value: str | int | None, field: str, bad: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        bad(field, "must be a string or a number, not a boolean", "invalid_type")
        return None
    text = value if isinstance(value, str) else str(value)
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        bad(field, f"is longer than {MAX_ID_LENGTH} characters", "too_long")
        return None
    return text


def _times(
    wire: WireEvent, defaults: BatchDefaults, received_at: datetime, bad: Any
) -> tuple[datetime | None, datetime | None, datetime]:
    """The client time, ``sentAt`` and the skew-corrected ``timestamp`` of a call."""
    if wire.timestamp is not None:
        original = _time(wire.timestamp, "timestamp", bad)
    else:
        original = _time(wire.original_timestamp, "originalTimestamp", bad)
    sent_at = _time(wire.sent_at, "sentAt", bad) or defaults.sent_at
    timestamp = received_at
    if original is not None:
        try:
            timestamp = original if sent_at is None else received_at - (sent_at - original)
        except OverflowError:
            bad("timestamp", "is too far from sentAt to correct the clock skew", "out_of_range")
    return original, sent_at, timestamp


def _time(value: str | None, field: str, bad: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        bad(field, f"{value[:64]!r} is not an ISO-8601 date-time", "invalid_timestamp")
        return None


def _merged(base: dict[str, Any] | None, own: dict[str, Any] | None) -> dict[str, Any]:
    if not base:
        return own or {}
    return {**base, **own} if own else dict(base)


def _too_deep(value: Any, budget: int) -> bool:
    """Whether containers nest more than ``budget`` levels; recursion stops at the budget, so
    hostile input cannot recurse far."""
    if budget <= 0:
        return True
    for child in value.values() if type(value) is dict else value:
        kind = type(child)
        if (kind is dict or kind is list) and _too_deep(child, budget - 1):
            return True
    return False
