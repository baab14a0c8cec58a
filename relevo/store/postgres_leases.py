"""Worker heartbeats and partition leases (PostgreSQL; see relevo.pipeline.ownership).

Every statement here runs on its own (autocommit) and touches one row or one worker's rows:
workers renewing at the same moment never hold a lock another is waiting for, so they cannot
deadlock, and a claim that loses a race simply does not take the partition this time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from relevo.store.base import FORGET_WORKERS_AFTER
from relevo.store.postgres_decisions import PostgresDecisions
from relevo.store.timeconv import to_micros


class PostgresLeases(PostgresDecisions):
    def heartbeat(self, worker: str, now: datetime, ttl: timedelta) -> list[str]:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO workers (name, alive_until) VALUES (%s, %s) ON CONFLICT (name)"
                " DO UPDATE SET alive_until = excluded.alive_until",
                (worker, to_micros(now + ttl)),
            )
            conn.execute(
                "DELETE FROM workers WHERE alive_until <= %s",
                (to_micros(now - FORGET_WORKERS_AFTER),),
            )
            rows = conn.execute(
                "SELECT name FROM workers WHERE alive_until > %s ORDER BY name", (to_micros(now),)
            ).fetchall()
        return [name for (name,) in rows]

    def lease(
        self, stream: str, worker: str, wanted: list[int], now: datetime, ttl: timedelta
    ) -> list[int]:
        at, until = to_micros(now), to_micros(now + ttl)
        with self._connection() as conn:
            conn.execute(
                "DELETE FROM partition_leases WHERE stream = %s AND owner = %s"
                " AND NOT (partition = ANY(%s))",
                (stream, worker, wanted),
            )
            for partition in sorted(wanted):
                conn.execute(
                    "INSERT INTO partition_leases (stream, partition, owner, until)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (stream, partition) DO UPDATE SET"
                    " owner = excluded.owner, until = excluded.until"
                    " WHERE partition_leases.owner = excluded.owner"
                    " OR partition_leases.until <= %s",
                    (stream, partition, worker, until, at),
                )
            rows = conn.execute(
                "SELECT partition FROM partition_leases WHERE stream = %s AND owner = %s"
                " ORDER BY partition",
                (stream, worker),
            ).fetchall()
        return [partition for (partition,) in rows]
