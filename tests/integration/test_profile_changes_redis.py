"""Profile change notices over a real Redis: a commit's ids reach every subscriber, and a
subscriber that (re)connects is told to forget everything it holds."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from relevo.store.redis_changes import RedisChanges
from relevo.testing.services import require_server

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def channel() -> str:
    require_server("Redis", URL, 6379)
    return f"relevo:test:{uuid.uuid4().hex}"


@pytest.fixture
def pair(channel: str) -> Iterator[tuple[RedisChanges, RedisChanges]]:
    publisher, subscriber = RedisChanges(URL, channel), RedisChanges(URL, channel)
    try:
        yield publisher, subscriber
    finally:
        subscriber.close()
        publisher.close()


def test_notices_reach_subscribers(pair: tuple[RedisChanges, RedisChanges]) -> None:
    publisher, subscriber = pair
    seen: list[list[str] | None] = []
    arrived = threading.Event()

    def listener(ids: list[str] | None) -> None:
        seen.append(ids)
        if ids:
            arrived.set()

    subscriber.subscribe(listener)
    assert subscriber.wait_subscribed(5)
    publisher.publish([])  # nothing to say: nothing sent
    publisher.publish(["prf_a", "prf_b"])
    assert arrived.wait(5)
    assert seen == [None, ["prf_a", "prf_b"]]  # told to forget all on connecting, then ids
