"""The embedded event log: a SQLite file written by one thread with group commit.

``append`` hands its items to the writer thread and waits. The writer takes everything queued
since its last commit, deduplicates it, inserts it and commits once (one fsync with
``synchronous=FULL``), then answers every waiting caller. Many concurrent requests therefore
share one fsync: durability costs latency, not throughput.

Deduplication is on ``(source, messageId)`` within a window; a duplicate is dropped and, when
its payload differs from the first one seen, also counted as a conflict.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from relevo._clock import Clock
from relevo.store import sqlite_db
from relevo.store.base import chunks
from relevo.stream.base import Append, AppendOutcome, Record, StreamCapabilities

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS log_partition_offset ON log (partition, "offset");
CREATE INDEX IF NOT EXISTS log_key ON log (key);
CREATE TABLE IF NOT EXISTS dedup (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_seen_at ON dedup (seen_at);
-- the end of each partition as of its last erasure: erasing a partition's last rows must not
-- let a restarted log hand their offsets out again (a consumer already committed past them)
CREATE TABLE IF NOT EXISTS ends (
    partition INTEGER PRIMARY KEY,
    "offset" INTEGER NOT NULL
);
"""

PURGE_EVERY_SECONDS = 60.0
SEQUENCE_END = -1  # the row of the ends table that keeps the last sequence number
MAX_ITEMS_PER_COMMIT = 20_000


@dataclass
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    items: list[Append] = field(default_factory=list)
    erase_keys: list[str] = field(default_factory=list)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


def _dedup_id(item: Append) -> str:
    return f"{item.source}\x1f{item.message_id}"


class EmbeddedLog:
    """``embedded://`` (next to the SQLite store) or ``embedded:///path/to/events.db``."""

    capabilities: ClassVar[StreamCapabilities] = StreamCapabilities(
        shared_between_processes=False, deduplicates=True
    )
    name = "embedded"

    def __init__(
        self,
        path: Path,
        *,
        partitions: int,
        clock: Clock,
        dedup_window_seconds: float,
        sync: bool = True,
        same_payload: Callable[[bytes, bytes], bool] = bytes.__eq__,
    ) -> None:
        self.path = path
        self.partitions = partitions
        self._clock = clock
        self._window = dedup_window_seconds
        self._same_payload = same_payload
        synchronous = "FULL" if sync else "NORMAL"
        self._conn = sqlite_db.connect(path, synchronous=synchronous)
        self._checkpointer = sqlite_db.Checkpointer(path, synchronous=synchronous)
        self._conn.executescript(SCHEMA)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._appended = threading.Condition()
        self._readers = sqlite_db.ThreadConnections(path)
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._ends = self._load_ends()
        last = self._conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM log), 0),"
            ' coalesce((SELECT "offset" FROM ends WHERE partition = ?), 0))',
            (SEQUENCE_END,),
        ).fetchone()[0]
        self._next_seq = last + 1
        self._last_purge = 0.0
        self._thread: threading.Thread | None = None

    def _load_ends(self) -> dict[int, int]:
        ends = dict.fromkeys(range(self.partitions), 0)
        for partition in range(self.partitions):
            row = self._conn.execute(
                'SELECT max(coalesce((SELECT max("offset") FROM log WHERE partition = ?1), 0),'
                ' coalesce((SELECT "offset" FROM ends WHERE partition = ?1), 0))',
                (partition,),
            ).fetchone()
            ends[partition] = row[0] or 0
        return ends

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="relevo-log-writer", daemon=True)
            self._thread.start()

    # -- writing ------------------------------------------------------------------------------

    async def append(self, items: list[Append]) -> AppendOutcome:
        if not items:
            return AppendOutcome(0, 0, 0)
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), items=items)
        with self._pending_lock:
            self._pending += len(items)
        try:
            self._queue.put(job)
            outcome: AppendOutcome = await asyncio.shield(job.future)
        finally:
            with self._pending_lock:
                self._pending -= len(items)
        return outcome

    async def erase_keys(self, keys: list[str]) -> int:
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), erase_keys=keys)
        self._queue.put(job)
        erased: int = await asyncio.shield(job.future)
        return erased

    def pending(self) -> int:
        return self._pending

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            count = len(job.items)
            while count < MAX_ITEMS_PER_COMMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this commit
                    break
                jobs.append(more)
                count += len(more.items)
            try:
                results, ends = self._commit(jobs)
            except Exception as exc:  # process boundary: fail the callers, keep the writer
                log.exception("event log commit failed")
                for failed in jobs:
                    failed.finish(error=exc)
                continue
            with self._appended:
                self._ends.update(ends)
                self._appended.notify_all()
            for done, result in zip(jobs, results, strict=True):
                done.finish(result)

    def _commit(self, jobs: list[_Job]) -> tuple[list[Any], dict[int, int]]:
        conn = self._conn
        now = self._clock.now().timestamp()
        conn.execute("BEGIN IMMEDIATE")
        try:
            results, ends = self._write_jobs(conn, jobs, now)
            if now - self._last_purge > PURGE_EVERY_SECONDS:
                conn.execute("DELETE FROM dedup WHERE seen_at < ?", (now - self._window,))
                self._last_purge = now
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return results, ends

    def _write_jobs(
        self, conn: sqlite3.Connection, jobs: list[_Job], now: float
    ) -> tuple[list[Any], dict[int, int]]:
        ids = [_dedup_id(i) for job in jobs for i in job.items if i.dedupe]
        seen: dict[str, tuple[int, float, bytes | None]] = {}
        for part in chunks(ids, 900):
            marks = ",".join("?" * len(part))
            for dedup_id, seq, seen_at in conn.execute(
                f"SELECT id, seq, seen_at FROM dedup WHERE id IN ({marks})", part
            ):
                seen[dedup_id] = (seq, seen_at, None)
        log_rows: list[tuple[int, int, int, str, bytes]] = []
        ends: dict[int, int] = {}
        dedup_rows: list[tuple[str, int, float]] = []
        results: list[Any] = []
        seq = self._next_seq
        for job in jobs:
            if job.erase_keys:
                # the pseudo-partition -1 keeps the last sequence number: dedup rows point at
                # sequence numbers, so an erased one must not be handed out again either
                conn.executemany(
                    'INSERT OR REPLACE INTO ends (partition, "offset") VALUES (?, ?)',
                    [*{**self._ends, **ends}.items(), (SEQUENCE_END, seq - 1)],
                )
                results.append(self._erase(conn, job.erase_keys))
                continue
            accepted = duplicates = conflicts = 0
            for item in job.items:
                if item.dedupe:
                    dedup_id = _dedup_id(item)
                    hit = seen.get(dedup_id)
                    if hit is not None and now - hit[1] < self._window:
                        duplicates += 1
                        first = self._payload(conn, hit)
                        # an erased first event cannot be compared: no conflict is claimed
                        if first is not None and not self._same_payload(first, item.payload):
                            conflicts += 1
                        continue
                    seen[dedup_id] = (seq, now, item.payload)
                    dedup_rows.append((dedup_id, seq, now))
                offset = ends[item.partition] = (
                    ends.get(item.partition, self._ends[item.partition]) + 1
                )
                log_rows.append((seq, item.partition, offset, item.key, item.payload))
                seq += 1
                accepted += 1
            results.append(AppendOutcome(accepted, duplicates, conflicts))
        conn.executemany(
            'INSERT INTO log (seq, partition, "offset", key, payload) VALUES (?, ?, ?, ?, ?)',
            log_rows,
        )
        conn.executemany(
            "INSERT OR REPLACE INTO dedup (id, seq, seen_at) VALUES (?, ?, ?)", dedup_rows
        )
        self._next_seq = seq
        return results, ends

    @staticmethod
    def _payload(conn: sqlite3.Connection, hit: tuple[int, float, bytes | None]) -> bytes | None:
        if hit[2] is not None:
            return hit[2]
        row = conn.execute("SELECT payload FROM log WHERE seq = ?", (hit[0],)).fetchone()
        return bytes(row[0]) if row else None

    @staticmethod
    def _erase(conn: sqlite3.Connection, keys: list[str]) -> int:
        erased = 0
        for part in chunks(keys, 900):
            marks = ",".join("?" * len(part))
            erased += conn.execute(f"DELETE FROM log WHERE key IN ({marks})", part).rowcount
        return erased

    # -- reading ------------------------------------------------------------------------------

    def read(self, partition: int, after: int, limit: int) -> list[Record]:
        rows = self._readers.get().execute(
            'SELECT "offset", payload FROM log WHERE partition = ? AND "offset" > ?'
            ' ORDER BY "offset" LIMIT ?',
            (partition, after, limit),
        )
        return [Record(partition, offset, payload) for offset, payload in rows]

    def end_offsets(self) -> dict[int, int]:
        with self._appended:
            return dict(self._ends)

    def wait(self, beyond: dict[int, int], timeout: float) -> None:
        with self._appended:
            if any(end > beyond[p] for p, end in self._ends.items() if p in beyond):
                return
            self._appended.wait(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        with self._appended:
            self._appended.notify_all()
        self._checkpointer.close()
        self._readers.close()
        self._conn.close()
