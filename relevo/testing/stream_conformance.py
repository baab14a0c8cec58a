"""The conformance suite every event log backend passes (embedded, Redis Streams, JetStream).

Subclass ``EventLogConformance`` in a test module (as ``TestSomethingLog``) and provide a
fixture ``open_log``: a callable that opens and starts a *new client on the same log* each time
it is called, built with ``partitions=PARTITIONS``, ``same_payload=same_payload`` and a dedup
window of at least a minute, and that closes every log it opened at teardown (``close`` may
already have been called: it must be idempotent).

What the port promises, and so what is checked here:
- per partition, records come back in append order with strictly increasing offsets; offsets
  need not be dense, and an offset is never handed out twice, even after erasure;
- ``read`` returns only records after ``after``, at most ``limit``; partitions are independent;
- ``end_offsets`` is the offset of each partition's last record (0 when it never had one);
- ``wait`` returns at once when a partition ends beyond ``beyond``, wakes up on an append
  and otherwise times out;
- ``(source, messageId)`` duplicates within the window are dropped and counted, and counted
  as conflicts when ``same_payload`` says the payloads differ;
- ``erase_keys`` removes exactly the records of those keys;
- concurrent appends keep every item exactly once, each sender's items in its order;
- an append is visible to a new client once it has returned, and dedup outlives the client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from relevo.events.keys import partition_of
from relevo.stream.base import Append, AppendOutcome, EventLog

PARTITIONS = 4
OpenLog = Callable[[], EventLog]


def same_payload(first: bytes, second: bytes) -> bool:
    """Payloads are ``call#receipt``: a retry may differ in its receipt part only."""
    return first.split(b"#")[0] == second.split(b"#")[0]


def item(
    key: str,
    message_id: str,
    *,
    source: str = "web",
    payload: bytes | None = None,
    dedupe: bool = True,
    partition: int | None = None,
) -> Append:
    """An append whose payload defaults to ``key|message_id``, in the key's partition."""
    return Append(
        key=key,
        partition=partition_of(key, PARTITIONS) if partition is None else partition,
        source=source,
        message_id=message_id,
        dedupe=dedupe,
        payload=payload if payload is not None else f"{key}|{message_id}".encode(),
    )


def key_in(partition: int, name: str = "k") -> str:
    """A profile key that lands in ``partition``."""
    n = 0
    while partition_of(f"u:{name}{n}", PARTITIONS) != partition:
        n += 1
    return f"u:{name}{n}"


def everything(log: EventLog) -> dict[int, list[tuple[int, bytes]]]:
    return {
        p: [(r.offset, r.payload) for r in log.read(p, 0, 1_000_000)] for p in range(PARTITIONS)
    }


def payloads(log: EventLog, partition: int, after: int = 0) -> list[bytes]:
    return [r.payload for r in log.read(partition, after, 1_000_000)]


def assert_increasing(offsets: list[int]) -> None:
    assert all(a < b for a, b in zip(offsets, offsets[1:], strict=False)), offsets
    assert not offsets or offsets[0] > 0, offsets


class EventLogConformance:
    """The shared tests; a subclass named ``Test...`` runs them against one backend."""

    async def test_append_then_read_in_order_per_partition(self, open_log: OpenLog) -> None:
        log = open_log()
        assert log.end_offsets() == dict.fromkeys(range(PARTITIONS), 0)
        sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        for round_ in range(4):
            # partition 3 gets nothing: partitions are independent
            batch = [item(key_in(i % 3), f"m{round_}-{i}") for i in range(9)]
            assert await log.append(batch) == AppendOutcome(9, 0, 0)
            for a in batch:
                sent[a.partition].append(a.payload)
        stored = everything(log)
        for p in range(PARTITIONS):
            assert [payload for _, payload in stored[p]] == sent[p]
            assert_increasing([offset for offset, _ in stored[p]])
        ends = log.end_offsets()
        assert ends == {p: stored[p][-1][0] if stored[p] else 0 for p in range(PARTITIONS)}
        assert log.pending() == 0

    async def test_read_after_an_offset_with_a_limit(self, open_log: OpenLog) -> None:
        log = open_log()
        key = key_in(1)
        await log.append([item(key, f"m{i}") for i in range(6)])
        await log.append([item(key_in(2), "elsewhere")])
        offsets = [offset for offset, _ in everything(log)[1]]
        tail = log.read(1, offsets[2], 2)
        assert [(r.partition, r.offset, r.payload) for r in tail] == [
            (1, offsets[3], f"{key}|m3".encode()),
            (1, offsets[4], f"{key}|m4".encode()),
        ]
        assert [r.offset for r in log.read(1, offsets[3], 10)] == offsets[4:]
        assert log.read(1, offsets[-1], 10) == []
        assert log.read(3, 0, 10) == []
        # offsets may be sparse: any offset below a record's reads from that record
        assert [r.offset for r in log.read(1, offsets[1] - 1, 1)] == [offsets[1]]

    async def test_wait_returns_at_once_when_a_partition_is_beyond(self, open_log: OpenLog) -> None:
        log = open_log()
        await log.append([item(key_in(2), "m1")])
        started = time.monotonic()
        log.wait(dict.fromkeys(range(PARTITIONS), 0), timeout=5)
        assert time.monotonic() - started < 1
        # a partition missing from ``beyond`` is not watched (a worker waits on its own)
        started = time.monotonic()
        log.wait({0: 0}, timeout=0.3)
        assert time.monotonic() - started >= 0.25

    async def test_wait_times_out_when_nothing_is_new(self, open_log: OpenLog) -> None:
        log = open_log()
        await log.append([item(key_in(2), "m1")])
        started = time.monotonic()
        log.wait(log.end_offsets(), timeout=0.2)
        assert 0.15 <= time.monotonic() - started < 2

    async def test_wait_wakes_up_when_an_append_lands(self, open_log: OpenLog) -> None:
        log = open_log()
        # a shared log must wake up a waiter on another client (another process)
        writer = open_log() if log.capabilities.shared_between_processes else log
        await writer.append([item(key_in(0), "before")])
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
            await asyncio.sleep(0.1)  # let it block (correctness does not depend on it)
            assert not woke.is_set()
            await writer.append([item(key_in(3), "m1")])
            assert await asyncio.to_thread(woke.wait, 5)
            assert waited[0] < 5
        finally:
            thread.join(10)

    async def test_duplicates_within_the_window_are_dropped_and_counted(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        a, b = item("u:1", "same"), item("u:1", "other")
        assert await log.append([a, a, b]) == AppendOutcome(2, 1, 0)
        assert await log.append([a]) == AppendOutcome(0, 1, 0)
        # concurrent retries of one message: exactly one wins
        outcomes = await asyncio.gather(*(log.append([item("u:2", "racy")]) for _ in range(10)))
        assert sum(o.accepted for o in outcomes) == 1
        assert sum(o.duplicates for o in outcomes) == 9
        # the same messageId from another source is another event
        ios = item("u:1", "same", source="ios", payload=b"from ios")
        assert await log.append([ios]) == AppendOutcome(1, 0, 0)
        # items not flagged for dedup (ids Relevo minted) are never deduplicated
        minted = item("u:1", "minted", dedupe=False)
        assert await log.append([minted, minted]) == AppendOutcome(2, 0, 0)
        assert payloads(log, a.partition).count(a.payload) == 1
        assert payloads(log, minted.partition).count(minted.payload) == 2

    async def test_a_duplicate_with_another_payload_counts_a_conflict(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        first = item("u:1", "m1", payload=b"call#received-1")
        assert await log.append([first]) == AppendOutcome(1, 0, 0)
        # a retry whose receipt part differs is no conflict (the first is read back)
        retry = item("u:1", "m1", payload=b"call#received-2")
        assert await log.append([retry]) == AppendOutcome(0, 1, 0)
        changed = item("u:1", "m1", payload=b"other-call#received-3")
        assert await log.append([changed]) == AppendOutcome(0, 1, 1)
        # within one append too
        assert await log.append(
            [item("u:2", "m2", payload=b"a#1"), item("u:2", "m2", payload=b"b#1")]
        ) == AppendOutcome(1, 1, 1)
        assert payloads(log, first.partition).count(b"call#received-1") == 1
        assert b"other-call#received-3" not in payloads(log, first.partition)

    async def test_erase_keys_removes_exactly_those_keys(self, open_log: OpenLog) -> None:
        log = open_log()
        keys = ["u:alice", "a:anon-alice", "u:bob", "u:carol"]
        for i in range(3):
            await log.append([item(key, f"{key}-{i}") for key in keys])
        before = everything(log)
        ends = log.end_offsets()
        erased = await log.erase_keys(["u:alice", "a:anon-alice", "u:nobody"])
        assert erased == 6
        after = everything(log)
        for p in range(PARTITIONS):
            assert after[p] == [
                (offset, payload)
                for offset, payload in before[p]
                if not payload.startswith((b"u:alice|", b"a:anon-alice|"))
            ]
        assert await log.erase_keys(["u:alice"]) == 0
        # an erased tail may pull an end back, never forward, and no offset is handed out again
        new_ends = log.end_offsets()
        assert all(new_ends[p] <= ends[p] for p in range(PARTITIONS))
        alice = item("u:alice", "after-erasure")
        await log.append([alice])
        assert [r.offset for r in log.read(alice.partition, 0, 100)][-1] > ends[alice.partition]

    async def test_concurrent_appends_keep_every_item_exactly_once(self, open_log: OpenLog) -> None:
        log = open_log()
        senders, batches, size = 20, 5, 10

        async def sender(n: int) -> list[AppendOutcome]:
            return [
                await log.append([item(f"u:s{n}", f"s{n}-{b}-{i}") for i in range(size)])
                for b in range(batches)
            ]

        results = await asyncio.gather(*(sender(n) for n in range(senders)))
        assert all(o == AppendOutcome(size, 0, 0) for batch in results for o in batch)
        stored = everything(log)
        every = [payload for rows in stored.values() for _, payload in rows]
        assert len(every) == len(set(every)) == senders * batches * size
        for n in range(senders):
            prefix = f"u:s{n}|".encode()
            own = payloads(log, partition_of(f"u:s{n}", PARTITIONS))
            mine = [p for p in own if p.startswith(prefix)]
            assert mine == [
                f"u:s{n}|s{n}-{b}-{i}".encode() for b in range(batches) for i in range(size)
            ]
        for rows in stored.values():
            assert_increasing([offset for offset, _ in rows])
        assert log.pending() == 0

    async def test_appended_records_outlive_the_client(self, open_log: OpenLog) -> None:
        log = open_log()
        await log.append([item(key_in(i % 3), f"m{i}") for i in range(10)])
        ends, stored = log.end_offsets(), everything(log)
        log.close()
        log.close()  # closing twice is harmless

        reopened = open_log()
        assert reopened.end_offsets() == ends
        assert everything(reopened) == stored
        # appends continue after the old end, and dedup still remembers what it saw
        outcome = await reopened.append([item(key_in(0), "m0"), item(key_in(0), "new")])
        assert outcome == AppendOutcome(1, 1, 0)
        tail = reopened.read(0, ends[0], 10)
        assert [r.payload for r in tail] == [f"{key_in(0)}|new".encode()]
        assert tail[0].offset > ends[0]
