"""Event log backends by URL scheme."""

from __future__ import annotations

from pathlib import Path

from relevo._clock import Clock
from relevo.config import Settings
from relevo.errors import ValidationError
from relevo.events.model import same_call
from relevo.store.sqlite_db import sqlite_path
from relevo.stream.base import EventLog
from relevo.stream.embedded import EmbeddedLog


def embedded_log_path(stream_url: str, store_url: str) -> Path:
    """``embedded:///path.db`` names its file; bare ``embedded://`` sits beside the store."""
    rest = stream_url.removeprefix("embedded://")
    if rest:
        return Path(rest.removeprefix("/") if rest.startswith("/./") else rest)
    if not store_url.startswith("sqlite:"):
        raise ValidationError("embedded:// without a path needs a sqlite store to sit beside")
    store = sqlite_path(store_url)
    return store.with_name(f"{store.stem}-events{store.suffix or '.db'}")


def open_log(settings: Settings, clock: Clock) -> EventLog:
    scheme = settings.stream_url.split(":", 1)[0]
    if scheme == "embedded":
        return EmbeddedLog(
            embedded_log_path(settings.stream_url, settings.store_url),
            partitions=settings.partitions,
            clock=clock,
            dedup_window_seconds=settings.dedup_window_seconds,
            sync=settings.log_sync,
            same_payload=same_call,
        )
    raise ValidationError(f"unknown stream URL scheme {scheme!r} (supported: embedded)")
