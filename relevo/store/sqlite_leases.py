"""Worker heartbeats and partition leases (SQLite: for one host; see relevo.pipeline.ownership)."""

from __future__ import annotations

from datetime import datetime, timedelta

from relevo.store.base import FORGET_WORKERS_AFTER
from relevo.store.sqlite_decisions import SQLiteDecisions
from relevo.store.timeconv import to_micros


class SQLiteLeases(SQLiteDecisions):
    def heartbeat(self, worker: str, now: datetime, ttl: timedelta) -> list[str]:
        at, until = to_micros(now), to_micros(now + ttl)
        with self._immediate() as conn:
            conn.execute(
                "INSERT INTO workers (name, alive_until) VALUES (?, ?) ON CONFLICT (name)"
                " DO UPDATE SET alive_until = excluded.alive_until",
                (worker, until),
            )
            conn.execute(
                "DELETE FROM workers WHERE alive_until <= ?",
                (to_micros(now - FORGET_WORKERS_AFTER),),
            )
            rows = conn.execute(
                "SELECT name FROM workers WHERE alive_until > ? ORDER BY name", (at,)
            ).fetchall()
        return [name for (name,) in rows]

    def lease(
        self, stream: str, worker: str, wanted: list[int], now: datetime, ttl: timedelta
    ) -> list[int]:
        at, until = to_micros(now), to_micros(now + ttl)
        with self._immediate() as conn:
            marks = ",".join("?" * len(wanted))
            conn.execute(
                "DELETE FROM partition_leases WHERE stream = ? AND owner = ?"
                + (f" AND partition NOT IN ({marks})" if wanted else ""),
                (stream, worker, *wanted),
            )
            conn.executemany(
                "INSERT INTO partition_leases (stream, partition, owner, until)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (stream, partition) DO UPDATE SET"
                " owner = excluded.owner, until = excluded.until"
                " WHERE partition_leases.owner = excluded.owner OR partition_leases.until <= ?",
                [(stream, partition, worker, until, at) for partition in wanted],
            )
            rows = conn.execute(
                "SELECT partition FROM partition_leases WHERE stream = ? AND owner = ?"
                " ORDER BY partition",
                (stream, worker),
            ).fetchall()
        return [partition for (partition,) in rows]
