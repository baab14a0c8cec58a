"""Redis Streams passes the event log conformance suite (needs Redis on 127.0.0.1:6379).

Each test uses its own key prefix and deletes its keys afterwards. Without a Redis server the
tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

redis = pytest.importorskip("redis", reason="the Redis driver: pip install 'relevo[redis]'")


from relevo._clock import ManualClock  # noqa: E402
from relevo.config import Settings  # noqa: E402
from relevo.errors import BackendError, BackendNotInstalled  # noqa: E402
from relevo.stream.base import EventLog  # noqa: E402
from relevo.stream.redis_streams import RedisStreamsLog  # noqa: E402
from relevo.stream.registry import open_log as open_configured_log  # noqa: E402
from relevo.testing.services import require_server  # noqa: E402
from relevo.testing.stream_conformance import (  # noqa: E402
    PARTITIONS,
    EventLogConformance,
    OpenLog,
    item,
    key_in,
    same_payload,
)

URL = os.environ.get("RELEVO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    require_server("Redis", URL, 6379)
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def prefix(admin: redis.Redis) -> Iterator[str]:
    name = f"relevo-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(admin.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        admin.delete(*keys)


@pytest.fixture
def open_log(prefix: str) -> Iterator[OpenLog]:
    opened: list[EventLog] = []

    def make() -> EventLog:
        log = RedisStreamsLog(
            URL,
            partitions=PARTITIONS,
            dedup_window_seconds=3600,
            same_payload=same_payload,
            prefix=prefix,
        )
        log.start()
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


class TestRedisStreamsLog(EventLogConformance):
    pass


async def test_offsets_are_dense_per_partition_and_never_reused(
    open_log: OpenLog, admin: redis.Redis, prefix: str
) -> None:
    log = open_log()
    await log.append([item(key_in(i % 2), f"m{i}") for i in range(7)])
    assert [r.offset for r in log.read(0, 0, 10)] == [1, 2, 3, 4]
    assert [r.offset for r in log.read(1, 0, 10)] == [1, 2, 3]
    assert log.end_offsets() == {0: 4, 1: 3, 2: 0, 3: 0}
    assert admin.xrange(f"{prefix}:p1", count=1)[0][0] == b"0-1"
    # erasing a partition's tail pulls its end back; the next append still gets a new offset
    assert await log.erase_keys([key_in(1)]) == 3
    assert log.end_offsets()[1] == 0
    await log.append([item(key_in(1), "after")])
    assert [r.offset for r in log.read(1, 0, 10)] == [4]


async def test_scripts_missing_from_the_server_are_loaded_again(open_log: OpenLog) -> None:
    """After a Redis restart or SCRIPT FLUSH (simulated here with unknown digests: the server
    is shared, so the test does not flush it)."""
    log = open_log()
    assert isinstance(log, RedisStreamsLog)
    await log.append([item(key_in(1), "m1")])
    log._shas = dict.fromkeys(log._shas, "0" * 40)
    await log.append([item(key_in(1), "m2")])
    log._shas = dict.fromkeys(log._shas, "0" * 40)
    assert len(log.read(1, 0, 10)) == 2


async def test_an_append_fails_when_the_replicas_asked_for_do_not_confirm(
    prefix: str, admin: redis.Redis
) -> None:
    """``?replicas=1`` on a server without replicas: the batch is stored but not acknowledged,
    and the client's retry is a duplicate."""
    if int(admin.info("replication")["connected_slaves"]):
        pytest.skip("this Redis has replicas")
    log = RedisStreamsLog(
        URL,
        partitions=PARTITIONS,
        dedup_window_seconds=60,
        prefix=prefix,
        replicas=1,
        timeout_seconds=0.1,
    )
    log.start()
    try:
        with pytest.raises(BackendError, match="0 of 1 Redis replicas"):
            await log.append([item("u:1", "m1")])
        assert log.pending() == 0
        with pytest.raises(BackendError):
            await log.append([item("u:1", "m1")])
        assert len(log.read(item("u:1", "m1").partition, 0, 10)) == 1
    finally:
        log.close()


def test_the_registry_opens_redis_urls_with_their_options(
    make_settings: Callable[..., Settings], prefix: str
) -> None:
    settings = make_settings(
        stream_url=f"{URL}?prefix={prefix}&replicas=0&waitaof=off&socket_timeout=30",
        partitions=3,
    )
    log = open_configured_log(settings, ManualClock())
    try:
        assert isinstance(log, RedisStreamsLog)
        assert (log.name, log.prefix, log.partitions) == (f"redis:{prefix}", prefix, 3)
        log.start()
        assert log.durability in {"none", "unknown", "fsync", "aof-everysec", "aof-no"}
        assert log.end_offsets() == {0: 0, 1: 0, 2: 0}
    finally:
        log.close()


def test_a_missing_driver_names_the_extra_to_install(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n == "redis" or n.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "relevo.stream.redis_streams")
    with pytest.raises(BackendNotInstalled, match=r"pip install 'relevo\[redis\]'"):
        open_configured_log(make_settings(stream_url=URL), ManualClock())
