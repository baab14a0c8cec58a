"""``relevo log copy``: the embedded log copied into Redis Streams, in order, idempotently."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from click.testing import CliRunner

from relevo._clock import SystemClock
from relevo.cli import cli
from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.events.model import decode_event
from relevo.services import build_services
from relevo.stream.registry import open_log
from relevo.testing.calls import track
from relevo.testing.services import require_server


def test_copy_then_copy_again(make_settings: Callable[..., Settings]) -> None:
    require_server("Redis", "redis://127.0.0.1:6379", 6379)
    settings = make_settings(log_sync=False)
    services = build_services(settings)
    try:
        services.log.start()
        write = services.keys.create("write").secret
        body = json.dumps({"batch": [track(f"u{i % 7}", f"m{i}") for i in range(50)]}).encode()
        result = asyncio.run(
            services.collect.collect(CollectRequest(body=body, implied_type=None, basic_user=write))
        )
        assert result.accepted == 50
    finally:
        services.close()
    target = f"redis://127.0.0.1:6379/0?prefix=copy{uuid.uuid4().hex[:8]}"
    env = {"RELEVO_STORE_URL": settings.store_url, "RELEVO_CONFIG": "/nonexistent.toml"}
    runner = CliRunner()
    first = runner.invoke(cli, ["log", "copy", "--from", "embedded://", "--to", target], env=env)
    assert first.exit_code == 0, first.output
    assert "copied 50 events (0 already there)" in first.output
    again = runner.invoke(cli, ["log", "copy", "--from", "embedded://", "--to", target], env=env)
    assert "copied 0 events (50 already there)" in again.output
    copied = open_log(settings.model_copy(update={"stream_url": target}), SystemClock())
    try:
        copied.start()
        ids = [
            decode_event(r.payload).message_id
            for p in range(copied.partitions)
            for r in copied.read(p, 0, 1000)
        ]
        per_user: dict[str, list[int]] = {}
        for p in range(copied.partitions):
            for r in copied.read(p, 0, 1000):
                event = decode_event(r.payload)
                per_user.setdefault(str(event.user_id), []).append(int(event.message_id[1:]))
    finally:
        copied.close()
    assert sorted(ids) == sorted(f"m{i}" for i in range(50))
    assert all(order == sorted(order) for order in per_user.values())  # each user in order
