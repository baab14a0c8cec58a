"""ISO-8601 timestamps as the SDKs send them (``Z``, ``+00:00``, milli- or microseconds)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 timestamp to an aware UTC datetime; naive times are taken as UTC.

    Raises:
        ValueError: the string is not an ISO-8601 date-time.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        raise ValueError(f"{value!r} is out of range in UTC") from exc
