"""NATS JetStream passes the event log conformance suite (needs nats-server -js on :4222).

Each test uses its own stream and deletes it afterwards. Without a NATS server the tests skip,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

pytest.importorskip("nats", reason="the NATS driver: pip install 'relevo[nats]'")

import nats
from nats.js.api import StorageType
from nats.js.client import JetStreamContext

from relevo._clock import ManualClock
from relevo.config import Settings
from relevo.errors import BackendError, BackendNotInstalled
from relevo.stream.base import EventLog
from relevo.stream.nats_jetstream import REUSE_IDLE_SECONDS, JetStreamLog, stream_sequence
from relevo.stream.registry import open_log as open_configured_log
from relevo.testing.services import require_server
from relevo.testing.stream_conformance import (
    PARTITIONS,
    EventLogConformance,
    OpenLog,
    item,
    key_in,
    same_payload,
)

T = TypeVar("T")

URL = os.environ.get("RELEVO_TEST_NATS_URL", "nats://127.0.0.1:4222")


def with_jetstream(action: Callable[[JetStreamContext], Coroutine[Any, Any, T]]) -> T:
    """Run ``action`` with a JetStream client of its own (tests are on another event loop)."""

    async def run() -> T:
        nc = await nats.connect(URL)
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def delete_stream(name: str) -> None:
    async def delete(js: JetStreamContext) -> None:
        await js.delete_stream(name)

    with_jetstream(delete)


@pytest.fixture
def stream() -> Iterator[str]:
    require_server("NATS", URL, 4222)
    name = f"RELEVO_TEST_{uuid.uuid4().hex[:12]}"
    yield name
    delete_stream(name)


@pytest.fixture
def open_log(stream: str) -> Iterator[OpenLog]:
    opened: list[EventLog] = []

    def make(window: float = 3600) -> EventLog:
        log = JetStreamLog(
            URL,
            partitions=PARTITIONS,
            dedup_window_seconds=window,
            same_payload=same_payload,
            stream=stream,
        )
        log.start()
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


class TestJetStreamLog(EventLogConformance):
    pass


async def test_the_stream_is_file_backed_with_the_dedup_window(
    open_log: Callable[..., EventLog], stream: str
) -> None:
    open_log(window=600)

    async def config(js: JetStreamContext) -> Any:
        return (await js.stream_info(stream)).config

    created = await asyncio.to_thread(with_jetstream, config)
    assert created.storage == StorageType.FILE
    assert created.duplicate_window == 600
    assert created.subjects == [f"{stream}.p.*"]
    # a log started with another window brings the stream's window in line
    open_log(window=900)
    assert (await asyncio.to_thread(with_jetstream, config)).duplicate_window == 900


async def test_reading_goes_on_after_the_consumer_is_gone(open_log: OpenLog, stream: str) -> None:
    """The server deletes a consumer left idle; an operator may delete one by hand."""
    log = open_log()
    assert isinstance(log, JetStreamLog)
    log._timeout = 0.5  # how long a pull waits for an answer nobody will give
    await log.append([item(key_in(2), f"m{i}") for i in range(6)])
    first = log.read(2, 0, 2)

    async def delete(js: JetStreamContext) -> None:
        await js.delete_consumer(stream, log._cursors[2].consumer)

    # idle for long: a new consumer is made before the server could have dropped the old one
    await asyncio.to_thread(with_jetstream, delete)
    log._cursors[2].used_at -= REUSE_IDLE_SECONDS
    second = log.read(2, first[-1].offset, 2)
    assert [r.payload for r in second] == [f"{key_in(2)}|m{i}".encode() for i in (2, 3)]
    # deleted while in use: that read fails, the next one starts over
    await asyncio.to_thread(with_jetstream, delete)
    with pytest.raises(BackendError):
        log.read(2, second[-1].offset, 10)
    rest = log.read(2, second[-1].offset, 10)
    assert [r.payload for r in rest] == [f"{key_in(2)}|m{i}".encode() for i in (4, 5)]


def test_the_stream_sequence_comes_from_either_ack_subject_layout() -> None:
    assert stream_sequence("$JS.ACK.S.C.1.42.7.1700000000000000000.0") == 42
    assert stream_sequence("$JS.ACK.dom.acchash.S.C.1.42.7.1700000000000000000.0.tok") == 42


def test_the_registry_opens_nats_urls_with_their_options(
    make_settings: Callable[..., Settings], stream: str
) -> None:
    settings = make_settings(
        stream_url=f"{URL}?stream={stream}&prefix={stream}.events", partitions=2
    )
    log = open_configured_log(settings, ManualClock())
    try:
        assert isinstance(log, JetStreamLog)
        assert (log.name, log.stream, log.prefix) == (f"nats:{stream}", stream, f"{stream}.events")
        log.start()
        assert log.end_offsets() == {0: 0, 1: 0}
    finally:
        log.close()


def test_a_missing_driver_names_the_extra_to_install(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n == "nats" or n.startswith("nats.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "relevo.stream.nats_jetstream")
    with pytest.raises(BackendNotInstalled, match=r"pip install 'relevo\[nats\]'"):
        open_configured_log(make_settings(stream_url=URL), ManualClock())
