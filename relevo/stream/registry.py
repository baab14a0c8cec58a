"""Event log backends by URL scheme; a broker's driver is imported only when its URL is chosen.

- ``embedded://`` or ``embedded:///path/events.db``: a SQLite file (the default).
- ``redis://host:port/db?prefix=relevo&replicas=0&waitaof=auto``: Redis Streams
  (``rediss://`` for TLS; other query options go to redis-py).
- ``nats://host:port?stream=RELEVO_EVENTS&prefix=...&replicas=1``: a NATS JetStream stream.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from relevo._clock import Clock
from relevo.config import Settings
from relevo.errors import BackendNotInstalled, ValidationError
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


def split_options(url: str, names: set[str]) -> tuple[str, dict[str, str]]:
    """The URL without the query options in ``names``, and those options."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in names:
            ours[name] = value
        else:
            theirs.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    text = options.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValidationError(f"stream URL option {name}={text!r} is not a number") from None
    if value < 0:
        raise ValidationError(f"stream URL option {name} must not be negative")
    return value


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
    if scheme in ("redis", "rediss"):
        return _redis_log(settings)
    if scheme in ("nats", "tls"):
        return _nats_log(settings)
    raise ValidationError(
        f"unknown stream URL scheme {scheme!r} (supported: embedded, redis, rediss, nats)"
    )


def _redis_log(settings: Settings) -> EventLog:
    try:
        from relevo.stream.redis_streams import RedisStreamsLog
    except ModuleNotFoundError as exc:
        if exc.name != "redis":
            raise
        raise BackendNotInstalled("redis", "redis") from exc
    url, options = split_options(settings.stream_url, {"prefix", "replicas", "waitaof"})
    wait_aof = options.get("waitaof", "auto")
    if wait_aof not in ("auto", "off"):
        raise ValidationError(f"stream URL option waitaof={wait_aof!r} is not auto or off")
    return RedisStreamsLog(
        url,
        partitions=settings.partitions,
        dedup_window_seconds=settings.dedup_window_seconds,
        same_payload=same_call,
        prefix=options.get("prefix") or "relevo",
        replicas=_int_option(options, "replicas", 0),
        wait_aof=wait_aof == "auto",
    )


def _nats_log(settings: Settings) -> EventLog:
    try:
        from relevo.stream.nats_jetstream import DEFAULT_STREAM, JetStreamLog
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "nats":
            raise
        raise BackendNotInstalled("nats", "nats") from exc
    url, options = split_options(settings.stream_url, {"stream", "prefix", "replicas"})
    stream = options.get("stream") or DEFAULT_STREAM
    return JetStreamLog(
        url,
        partitions=settings.partitions,
        dedup_window_seconds=settings.dedup_window_seconds,
        same_payload=same_call,
        stream=stream,
        prefix=options.get("prefix") or stream,
        replicas=_int_option(options, "replicas", 1) or 1,
    )
