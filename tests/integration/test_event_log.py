"""The embedded event log on a real SQLite file: order, group commit, durability, dedup, erasure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relevo._clock import ManualClock
from relevo.stream.base import Append, AppendOutcome
from relevo.stream.embedded import EmbeddedLog

WINDOW = 3600.0
PARTITIONS = 4


def item(
    key: str,
    message_id: str,
    *,
    partition: int | None = None,
    source: str = "web",
    payload: bytes | None = None,
    dedupe: bool = True,
) -> Append:
    return Append(
        key=key,
        partition=hash_partition(key) if partition is None else partition,
        source=source,
        message_id=message_id,
        dedupe=dedupe,
        payload=payload if payload is not None else f"{key}|{message_id}".encode(),
    )


def hash_partition(key: str) -> int:
    return sum(key.encode()) % PARTITIONS


def everything(log: EmbeddedLog) -> dict[int, list[tuple[int, bytes]]]:
    return {
        p: [(r.offset, r.payload) for r in log.read(p, 0, 1_000_000)] for p in range(PARTITIONS)
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_log(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., EmbeddedLog]]:
    """Open (and start) logs on one file; every log opened is closed at the end."""
    opened: list[EmbeddedLog] = []

    def make(**overrides: Any) -> EmbeddedLog:
        options: dict[str, Any] = {
            "partitions": PARTITIONS,
            "clock": clock,
            "dedup_window_seconds": WINDOW,
        }
        options.update(overrides)
        log = EmbeddedLog(tmp_path / "events.db", **options)
        log.start()
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


@pytest.fixture
def log(open_log: Callable[..., EmbeddedLog]) -> EmbeddedLog:
    return open_log()


async def test_append_then_read_in_order_with_dense_offsets(log: EmbeddedLog) -> None:
    sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for round_ in range(5):
        batch = [item(f"k{i}", f"m{round_}-{i}", partition=i % PARTITIONS) for i in range(10)]
        outcome = await log.append(batch)
        assert outcome == AppendOutcome(accepted=10, duplicates=0, conflicts=0)
        for a in batch:
            sent[a.partition].append(a.payload)
    stored = everything(log)
    for partition in range(PARTITIONS):
        offsets = [offset for offset, _ in stored[partition]]
        assert offsets == list(range(1, len(sent[partition]) + 1))
        assert [payload for _, payload in stored[partition]] == sent[partition]
    assert log.end_offsets() == {p: len(sent[p]) for p in range(PARTITIONS)}
    # reading after an offset, with a limit
    tail = log.read(0, 3, 2)
    assert [(r.partition, r.offset, r.payload) for r in tail] == [
        (0, 4, sent[0][3]),
        (0, 5, sent[0][4]),
    ]
    assert log.read(0, len(sent[0]), 10) == []
    assert log.pending() == 0


async def test_concurrent_appends_share_commits(
    log: EmbeddedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = 200
    commits: list[int] = []  # jobs per commit
    real_commit = log._commit

    def counting_commit(jobs: list[Any]) -> Any:
        if not commits:
            # hold the first commit until every caller has queued its append, as a slow
            # fsync would: the rest must then go to disk together
            deadline = time.monotonic() + 10
            while log.pending() < tasks and time.monotonic() < deadline:
                time.sleep(0.001)
        commits.append(len(jobs))
        return real_commit(jobs)

    monkeypatch.setattr(log, "_commit", counting_commit)
    outcomes = await asyncio.gather(
        *(log.append([item(f"user-{i}", f"m-{i}")]) for i in range(tasks))
    )
    assert all(o == AppendOutcome(1, 0, 0) for o in outcomes)
    assert sum(commits) == tasks
    assert len(commits) <= 3, commits
    assert max(commits) >= tasks - 2
    stored = everything(log)
    assert sum(len(rows) for rows in stored.values()) == tasks
    for partition, rows in stored.items():
        assert [offset for offset, _ in rows] == list(range(1, len(rows) + 1)), partition
    assert log.pending() == 0


async def test_many_concurrent_appenders_all_succeed_without_help(log: EmbeddedLog) -> None:
    async def sender(n: int) -> list[AppendOutcome]:
        return [await log.append([item(f"s{n}", f"s{n}-{i}")]) for i in range(20)]

    results = await asyncio.gather(*(sender(n) for n in range(25)))
    assert sum(o.accepted for batch in results for o in batch) == 500
    # every sender's events are in its partition, in the order it sent them
    stored = everything(log)
    for n in range(25):
        mine = [p for _, p in stored[hash_partition(f"s{n}")] if p.startswith(f"s{n}|".encode())]
        assert mine == [f"s{n}|s{n}-{i}".encode() for i in range(20)]


async def test_durable_across_close_and_reopen(open_log: Callable[..., EmbeddedLog]) -> None:
    log = open_log()
    await log.append([item(f"k{i}", f"m{i}", partition=i % 3) for i in range(10)])
    ends, stored = log.end_offsets(), everything(log)
    log.close()

    reopened = open_log()
    assert reopened.end_offsets() == ends == {0: 4, 1: 3, 2: 3, 3: 0}
    assert everything(reopened) == stored
    # appends continue where the log ended, and dedup still remembers what it saw
    outcome = await reopened.append([item("k0", "m0", partition=0), item("kx", "new", partition=0)])
    assert outcome == AppendOutcome(1, 1, 0)
    assert [r.offset for r in reopened.read(0, 0, 100)] == [1, 2, 3, 4, 5]
    assert reopened.read(0, 4, 1)[0].payload == b"kx|new"


async def test_duplicate_inside_window_is_dropped_and_accepted_after_it(
    log: EmbeddedLog, clock: ManualClock
) -> None:
    first = item("u:1", "msg-1")
    assert await log.append([first]) == AppendOutcome(1, 0, 0)
    clock.advance(seconds=WINDOW - 1)
    assert await log.append([first]) == AppendOutcome(0, 1, 0)
    clock.advance(seconds=2)  # now past the window since the first was seen
    assert await log.append([first]) == AppendOutcome(1, 0, 0)
    # and that acceptance starts a new window
    assert await log.append([first]) == AppendOutcome(0, 1, 0)
    assert len(log.read(first.partition, 0, 100)) == 2


async def test_dedup_window_survives_the_purge(log: EmbeddedLog, clock: ManualClock) -> None:
    """The periodic purge of old dedup rows must not forget ids still inside the window."""
    old, recent = item("u:1", "old"), item("u:1", "recent")
    await log.append([old])
    clock.advance(seconds=WINDOW / 2)
    await log.append([recent])
    clock.advance(seconds=WINDOW / 2 + 1)  # old is out, recent is in; a purge runs now
    await log.append([item("u:2", "trigger")])
    assert await log.append([recent]) == AppendOutcome(0, 1, 0)
    assert await log.append([old]) == AppendOutcome(1, 0, 0)


async def test_duplicates_within_one_append_and_one_commit(log: EmbeddedLog) -> None:
    a = item("u:1", "same")
    assert await log.append([a, a, item("u:1", "other")]) == AppendOutcome(2, 1, 0)
    outcomes = await asyncio.gather(*(log.append([item("u:2", "racy")]) for _ in range(10)))
    assert sum(o.accepted for o in outcomes) == 1
    assert sum(o.duplicates for o in outcomes) == 9


async def test_same_message_id_from_different_sources_is_not_a_duplicate(
    log: EmbeddedLog,
) -> None:
    outcome = await log.append(
        [item("u:1", "shared", source="web"), item("u:1", "shared", source="ios")]
    )
    assert outcome == AppendOutcome(2, 0, 0)
    assert await log.append([item("u:1", "shared", source="android")]) == AppendOutcome(1, 0, 0)
    assert await log.append([item("u:1", "shared", source="ios")]) == AppendOutcome(0, 1, 0)


async def test_unflagged_items_are_never_deduplicated(log: EmbeddedLog) -> None:
    minted = item("u:1", "relevo-minted", dedupe=False)
    assert await log.append([minted, minted]) == AppendOutcome(2, 0, 0)
    assert await log.append([minted]) == AppendOutcome(1, 0, 0)


async def test_same_message_id_with_another_payload_counts_a_conflict(
    log: EmbeddedLog,
) -> None:
    original = item("u:1", "m1", payload=b"original")
    assert await log.append([original]) == AppendOutcome(1, 0, 0)
    # a true retry: same payload, no conflict (the first one is read back from disk)
    assert await log.append([original]) == AppendOutcome(0, 1, 0)
    changed = item("u:1", "m1", payload=b"changed")
    assert await log.append([changed]) == AppendOutcome(0, 1, 1)
    # within one commit too
    assert await log.append(
        [item("u:2", "m2", payload=b"a"), item("u:2", "m2", payload=b"b")]
    ) == AppendOutcome(1, 1, 1)
    assert [
        r.payload
        for r in log.read(original.partition, 0, 10)
        if r.payload in (b"original", b"changed")
    ] == [b"original"]


async def test_conflicts_use_the_injected_comparison(
    open_log: Callable[..., EmbeddedLog],
) -> None:
    log = open_log(same_payload=lambda a, b: a.split(b"#")[0] == b.split(b"#")[0])
    await log.append([item("u:1", "m1", payload=b"call#received-at-1")])
    assert await log.append([item("u:1", "m1", payload=b"call#received-at-2")]) == AppendOutcome(
        0, 1, 0
    )
    assert await log.append([item("u:1", "m1", payload=b"other#x")]) == AppendOutcome(0, 1, 1)


async def test_erase_keys_removes_only_those_keys(log: EmbeddedLog) -> None:
    for i in range(3):
        await log.append(
            [
                item("u:alice", f"a{i}", partition=1),
                item("a:anon-alice", f"aa{i}", partition=2),
                item("u:bob", f"b{i}", partition=1),
                item("u:carol", f"c{i}", partition=2),
            ]
        )
    ends = log.end_offsets()
    erased = await log.erase_keys(["u:alice", "a:anon-alice", "u:nobody"])
    assert erased == 6
    left = everything(log)
    assert [p for _, p in left[1]] == [f"u:bob|b{i}".encode() for i in range(3)]
    assert [p for _, p in left[2]] == [f"u:carol|c{i}".encode() for i in range(3)]
    # erasure leaves holes; it never moves the end of a partition back
    assert log.end_offsets() == ends
    assert await log.erase_keys(["u:alice"]) == 0


async def test_erasing_the_tail_does_not_reuse_offsets_after_reopen(
    open_log: Callable[..., EmbeddedLog],
) -> None:
    """A consumer that committed offset N must see every event appended later, even when the
    events up to N were erased and the log restarted in between."""
    log = open_log()
    await log.append([item("u:bob", "b1", partition=0)])
    await log.append([item("u:alice", f"a{i}", partition=0) for i in range(3)])
    assert log.end_offsets()[0] == 4
    consumer_offset = 4  # a processor has applied everything so far
    assert await log.erase_keys(["u:alice"]) == 3
    log.close()

    reopened = open_log()
    assert reopened.end_offsets()[0] == 4
    await reopened.append([item("u:carol", "c1", partition=0)])
    unseen = reopened.read(0, consumer_offset, 10)
    assert [r.payload for r in unseen] == [b"u:carol|c1"]
    assert unseen[0].offset == 5


async def test_erasing_the_tail_does_not_reuse_sequence_numbers_after_reopen(
    open_log: Callable[..., EmbeddedLog],
) -> None:
    """Dedup rows point at sequence numbers: a retry of an erased event must stay a plain
    duplicate after a restart, not be compared with a newer event that took its number."""
    log = open_log()
    await log.append([item("u:alice", "a1", partition=0)])
    assert await log.erase_keys(["u:alice"]) == 1
    log.close()

    reopened = open_log()
    await reopened.append([item("u:carol", "c1", partition=0)])
    retry = await reopened.append([item("u:alice", "a1", partition=0)])
    assert (retry.accepted, retry.duplicates, retry.conflicts) == (0, 1, 0)


async def test_wait_returns_at_once_when_something_is_beyond(log: EmbeddedLog) -> None:
    await log.append([item("u:1", "m1", partition=2)])
    started = time.monotonic()
    log.wait({0: 0, 1: 0, 2: 0, 3: 0}, timeout=5)
    assert time.monotonic() - started < 1
    started = time.monotonic()
    log.wait({0: 0}, timeout=0.3)  # a partition missing from ``beyond`` is not watched
    assert time.monotonic() - started >= 0.25


async def test_wait_times_out_when_nothing_is_new(log: EmbeddedLog) -> None:
    await log.append([item("u:1", "m1", partition=2)])
    started = time.monotonic()
    log.wait(log.end_offsets(), timeout=0.2)
    assert time.monotonic() - started >= 0.15


async def test_wait_wakes_up_when_an_append_lands(log: EmbeddedLog) -> None:
    ends = log.end_offsets()
    woke = threading.Event()
    waited: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        log.wait(ends, timeout=10)
        waited.append(time.monotonic() - started)
        woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        await asyncio.sleep(0.05)  # let it block (correctness does not depend on it)
        await log.append([item("u:1", "m1", partition=3)])
        assert await asyncio.to_thread(woke.wait, 5)
        assert waited[0] < 5
    finally:
        thread.join(10)


async def test_a_failed_commit_fails_its_callers_and_the_writer_goes_on(
    log: EmbeddedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = log._commit
    calls = 0

    def failing_once(jobs: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return real_commit(jobs)

    monkeypatch.setattr(log, "_commit", failing_once)
    with pytest.raises(OSError, match="disk full"):
        await log.append([item("u:1", "lost")])
    assert log.pending() == 0
    assert log.end_offsets()[hash_partition("u:1")] == 0
    # nothing of the failed commit was remembered: the same message is not a duplicate
    assert await log.append([item("u:1", "lost")]) == AppendOutcome(1, 0, 0)
    assert log.end_offsets()[hash_partition("u:1")] == 1
