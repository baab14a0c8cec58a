"""The embedded (SQLite) event log passes the event log conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relevo._clock import ManualClock
from relevo.stream.base import EventLog
from relevo.stream.embedded import EmbeddedLog
from relevo.testing.stream_conformance import (
    PARTITIONS,
    EventLogConformance,
    OpenLog,
    same_payload,
)


@pytest.fixture
def open_log(tmp_path: Path) -> Iterator[OpenLog]:
    clock = ManualClock()
    opened: list[EventLog] = []

    def make() -> EventLog:
        log = EmbeddedLog(
            tmp_path / "events.db",
            partitions=PARTITIONS,
            clock=clock,
            dedup_window_seconds=3600,
            same_payload=same_payload,
        )
        log.start()
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


class TestEmbeddedLog(EventLogConformance):
    pass
