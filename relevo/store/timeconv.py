"""Event times as integer microseconds since the epoch (they sort, unlike ISO strings)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)
