"""Destinations, the outbox they are fed from, and their delivery queues (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from relevo.store import rows
from relevo.store.base import Delivery, FailedDelivery, OutboxEntry
from relevo.store.postgres_base import PostgresBase
from relevo.store.postgres_db import insert_rows
from relevo.store.timeconv import to_micros

OUTBOX_STREAM = "outbox"
DELIVERY_INSERT_COLUMNS = (
    "destination",
    "webhook_id",
    "profile_id",
    "payload",
    "attempts",
    "first_at",
    "next_at",
)


class PostgresDeliveries(PostgresBase):
    def list_destinations(self) -> list[tuple[str, bytes]]:
        found = self._fetchall("SELECT name, definition FROM destinations ORDER BY name")
        return [(name, definition.encode()) for name, definition in found]

    def put_destination(self, name: str, definition: bytes, at: datetime) -> None:
        self._write(
            "INSERT INTO destinations (name, definition, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,"
            " updated_at = excluded.updated_at",
            (name, definition.decode(), at.isoformat()),
        )

    def delete_destination(self, name: str) -> bool:
        with self._transaction() as conn:
            gone = conn.execute("DELETE FROM destinations WHERE name = %s", (name,)).rowcount
            conn.execute("DELETE FROM deliveries WHERE destination = %s", (name,))
        return gone > 0

    def outbox_cursor(self) -> int:
        row = self._fetchone(
            'SELECT "offset" FROM offsets WHERE stream = %s AND partition = 0', (OUTBOX_STREAM,)
        )
        return int(row[0]) if row else 0

    def outbox_pending(self) -> bool:
        return self._fetchone("SELECT 1 FROM outbox LIMIT 1") is not None

    def fan_out(
        self, after: int, limit: int, route: Callable[[OutboxEntry], list[Delivery]]
    ) -> int:
        """Consume the oldest ``limit`` outbox rows into deliveries, in one transaction.

        As in SQLite, each consumed row is numbered from the outbox cursor (the entry's id, and
        so its webhook ids). Here several processes may fan out: the cursor's row is locked
        first (an upsert that returns it), so fan-outs take turns and never number or route a
        row twice. Rows are deleted by id, not up to an id: a worker's transaction may commit
        a row with a lower id after a higher one was consumed, and it is consumed next time.
        """
        if not self.outbox_pending():
            return 0
        with self._transaction() as conn:
            row = conn.execute(
                'INSERT INTO offsets (stream, partition, "offset") VALUES (%s, 0, 0)'
                ' ON CONFLICT (stream, partition) DO UPDATE SET "offset" = offsets."offset"'
                ' RETURNING "offset"',
                (OUTBOX_STREAM,),
            ).fetchone()
            sequence = max(int(row[0]) if row else 0, after)
            found = conn.execute(
                "SELECT id, at, kind, profile_id, payload FROM outbox ORDER BY id LIMIT %s",
                (limit,),
            ).fetchall()
            entries = [
                OutboxEntry(sequence + n, datetime.fromisoformat(at), kind, pid, bytes(payload))
                for n, (_, at, kind, pid, payload) in enumerate(found, start=1)
            ]
            deliveries = [d for entry in entries for d in route(entry)]
            insert_rows(
                conn,
                "deliveries",
                DELIVERY_INSERT_COLUMNS,
                [
                    (
                        d.destination,
                        d.webhook_id,
                        d.profile_id,
                        d.payload,
                        0,
                        to_micros(d.first_at),
                        to_micros(d.next_at),
                    )
                    for d in deliveries
                ],
            )
            if entries:
                conn.execute(
                    'UPDATE offsets SET "offset" = %s WHERE stream = %s AND partition = 0',
                    (entries[-1].id, OUTBOX_STREAM),
                )
                conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r[0] for r in found],))
        return len(entries)

    def due_deliveries(self, destination: str, now: datetime, limit: int) -> list[Delivery]:
        found = self._fetchall(
            f"SELECT {rows.DELIVERY_COLUMNS} FROM deliveries WHERE destination = %s"
            " AND next_at <= %s ORDER BY next_at, id LIMIT %s",
            (destination, to_micros(now), limit),
        )
        return [rows.delivery(row) for row in found]

    def delivered(self, delivery_id: int) -> None:
        self._write("DELETE FROM deliveries WHERE id = %s", (delivery_id,))

    def reschedule(self, delivery_id: int, attempts: int, next_at: datetime, error: str) -> None:
        self._write(
            "UPDATE deliveries SET attempts = %s, next_at = %s, last_error = %s WHERE id = %s",
            (attempts, to_micros(next_at), error, delivery_id),
        )

    def fail(self, delivery: Delivery, attempts: int, reason: str, at: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO failed_deliveries (destination, webhook_id, profile_id, payload,"
                " attempts, reason, failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    delivery.destination,
                    delivery.webhook_id,
                    delivery.profile_id,
                    delivery.payload,
                    attempts,
                    reason,
                    at.isoformat(),
                ),
            )
            conn.execute("DELETE FROM deliveries WHERE id = %s", (delivery.id,))

    def failed_deliveries(
        self, destination: str | None, after: int, limit: int
    ) -> list[FailedDelivery]:
        params: list[Any] = [after]
        where = "id > %s"
        if destination is not None:
            where += " AND destination = %s"
            params.append(destination)
        found = self._fetchall(
            f"SELECT {rows.FAILED_DELIVERY_COLUMNS} FROM failed_deliveries WHERE {where}"
            " ORDER BY id LIMIT %s",
            [*params, limit],
        )
        return [rows.failed_delivery(row) for row in found]

    def replay_failed(self, ids: list[int], now: datetime) -> int:
        """Queue failed deliveries again, keeping their webhook ids (receivers dedupe on it)."""
        if not ids:
            return 0
        # one statement: what it takes out of failed_deliveries is what it queues
        return self._write(
            "WITH moved AS (DELETE FROM failed_deliveries WHERE id = ANY(%s)"
            " RETURNING id, destination, webhook_id, profile_id, payload)"
            " INSERT INTO deliveries (destination, webhook_id, profile_id, payload, attempts,"
            " first_at, next_at) SELECT destination, webhook_id, profile_id, payload, 0, %s, %s"
            " FROM moved ORDER BY id",
            (sorted(set(ids)), to_micros(now), to_micros(now)),
        )
