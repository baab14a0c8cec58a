"""Rows of the store's tables as the port's dataclasses, shared by every SQL backend.

The backends store the same values the same way (times as ISO text or as microseconds, see
``timeconv``), so a row converts the same whichever database it came from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from relevo.decisions.log import Feedback
from relevo.store.base import ApiKey, Delivery, FailedDelivery, JournalEntry
from relevo.store.timeconv import from_micros

# the columns each converter reads, in its order
API_KEY_COLUMNS = "id, kind, source, created_at, revoked_at"
FEEDBACK_COLUMNS = "decision_id, offer, kind, placement, at, value, message_id"
DELIVERY_COLUMNS = (
    "id, destination, webhook_id, profile_id, payload, attempts, first_at, next_at, last_error"
)
FAILED_DELIVERY_COLUMNS = (
    "id, destination, webhook_id, profile_id, payload, attempts, reason, failed_at"
)
JOURNAL_COLUMNS = "at, outcome, survivor, other, identifier, reason, message_id, source"


def api_key(row: tuple[Any, ...]) -> ApiKey:
    key_id, kind, source, created_at, revoked_at = row
    return ApiKey(
        id=key_id,
        kind=kind,
        source=source,
        created_at=datetime.fromisoformat(created_at),
        revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
    )


def feedback(row: tuple[Any, ...]) -> Feedback:
    decision_id, offer, kind, placement, at, value, message_id = row
    return Feedback(
        decision_id=decision_id,
        offer=offer,
        kind=kind,
        placement=placement,
        at=from_micros(at),
        value=value,
        message_id=message_id,
    )


def delivery(row: tuple[Any, ...]) -> Delivery:
    delivery_id, destination, webhook, profile_id, payload, attempts, first, next_, error = row
    return Delivery(
        delivery_id,
        destination,
        webhook,
        profile_id,
        bytes(payload),
        attempts,
        from_micros(first),
        from_micros(next_),
        error,
    )


def failed_delivery(row: tuple[Any, ...]) -> FailedDelivery:
    failed_id, destination, webhook, profile_id, payload, attempts, reason, failed_at = row
    return FailedDelivery(
        failed_id,
        destination,
        webhook,
        profile_id,
        bytes(payload),
        attempts,
        reason,
        datetime.fromisoformat(failed_at),
    )


def journal_entry(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(datetime.fromisoformat(row[0]), *row[1:])
