"""Destinations, the outbox they are fed from, and their delivery queues (SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from relevo.store.base import Delivery, FailedDelivery, OutboxEntry, chunks
from relevo.store.sqlite_base import SQLiteBase
from relevo.store.timeconv import from_micros, to_micros

OUTBOX_STREAM = "outbox"


class SQLiteDeliveries(SQLiteBase):
    def list_destinations(self) -> list[tuple[str, bytes]]:
        rows = self._reader().execute("SELECT name, definition FROM destinations ORDER BY name")
        return [(name, definition.encode()) for name, definition in rows]

    def put_destination(self, name: str, definition: bytes, at: datetime) -> None:
        self._write(
            "INSERT INTO destinations (name, definition, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,"
            " updated_at = excluded.updated_at",
            (name, definition.decode(), at.isoformat()),
        )

    def delete_destination(self, name: str) -> bool:
        with self._immediate() as conn:
            gone = conn.execute("DELETE FROM destinations WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM deliveries WHERE destination = ?", (name,))
        return gone > 0

    def outbox_cursor(self) -> int:
        row = (
            self._reader()
            .execute(
                'SELECT "offset" FROM offsets WHERE stream = ? AND partition = 0', (OUTBOX_STREAM,)
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def outbox_pending(self) -> bool:
        """Whether the outbox holds anything (one read; in WAL mode a writer does not block it)."""
        return self._reader().execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None

    def fan_out(
        self, after: int, limit: int, route: Callable[[OutboxEntry], list[Delivery]]
    ) -> int:
        """Consume the oldest ``limit`` outbox rows into deliveries, in one transaction.

        Each consumed row is numbered from the outbox sequence (``outbox_cursor``, read again
        here inside the transaction, so ``after`` is only the caller's view of it), and that
        number, not the row's id, is the entry's id and so its webhook ids. Row ids cannot serve:
        the table has no AUTOINCREMENT, so once it is drained SQLite hands out ids from 1 again.
        A cursor over row ids then skipped every new effect whose id was at or below it (and a
        later fan-out deleted them unsent), and ids derived from them repeated webhook ids that
        receivers had already seen. Rows are consumed whatever their ids: new rows always get ids
        above every row still in the table, so ``ORDER BY id`` is the order they were written in.
        """
        if not self.outbox_pending():
            return 0  # nothing to do: no write transaction (the processor's lock stays free)
        with self._immediate() as conn:
            row = conn.execute(
                'SELECT "offset" FROM offsets WHERE stream = ? AND partition = 0', (OUTBOX_STREAM,)
            ).fetchone()
            sequence = max(int(row[0]) if row else 0, after)
            rows = conn.execute(
                "SELECT id, at, kind, profile_id, payload FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            entries = [
                OutboxEntry(sequence + n, datetime.fromisoformat(at), kind, pid, payload)
                for n, (_, at, kind, pid, payload) in enumerate(rows, start=1)
            ]
            deliveries = [d for entry in entries for d in route(entry)]
            conn.executemany(
                "INSERT INTO deliveries (destination, webhook_id, profile_id, payload,"
                " attempts, first_at, next_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                [
                    (
                        d.destination,
                        d.webhook_id,
                        d.profile_id,
                        d.payload,
                        to_micros(d.first_at),
                        to_micros(d.next_at),
                    )
                    for d in deliveries
                ],
            )
            if entries:
                conn.execute(
                    'INSERT INTO offsets (stream, partition, "offset") VALUES (?, 0, ?)'
                    " ON CONFLICT (stream, partition)"
                    ' DO UPDATE SET "offset" = excluded."offset"',
                    (OUTBOX_STREAM, entries[-1].id),
                )
                conn.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        return len(entries)

    def due_deliveries(self, destination: str, now: datetime, limit: int) -> list[Delivery]:
        rows = self._reader().execute(
            "SELECT id, destination, webhook_id, profile_id, payload, attempts, first_at,"
            " next_at, last_error FROM deliveries WHERE destination = ? AND next_at <= ?"
            " ORDER BY next_at, id LIMIT ?",
            (destination, to_micros(now), limit),
        )
        return [
            Delivery(i, d, w, p, payload, a, from_micros(f), from_micros(n), e)
            for i, d, w, p, payload, a, f, n, e in rows
        ]

    def delivered(self, delivery_id: int) -> None:
        self._write("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def reschedule(self, delivery_id: int, attempts: int, next_at: datetime, error: str) -> None:
        self._write(
            "UPDATE deliveries SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
            (attempts, to_micros(next_at), error, delivery_id),
        )

    def fail(self, delivery: Delivery, attempts: int, reason: str, at: datetime) -> None:
        with self._immediate() as conn:
            conn.execute(
                "INSERT INTO failed_deliveries (destination, webhook_id, profile_id, payload,"
                " attempts, reason, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            conn.execute("DELETE FROM deliveries WHERE id = ?", (delivery.id,))

    def failed_deliveries(
        self, destination: str | None, after: int, limit: int
    ) -> list[FailedDelivery]:
        sql = (
            "SELECT id, destination, webhook_id, profile_id, payload, attempts, reason,"
            " failed_at FROM failed_deliveries WHERE id > ?"
        )
        params: list[Any] = [after]
        if destination is not None:
            sql += " AND destination = ?"
            params.append(destination)
        rows = self._reader().execute(sql + " ORDER BY id LIMIT ?", [*params, limit])
        return [
            FailedDelivery(i, d, w, p, payload, a, r, datetime.fromisoformat(f))
            for i, d, w, p, payload, a, r, f in rows
        ]

    def replay_failed(self, ids: list[int], now: datetime) -> int:
        """Queue failed deliveries again, keeping their webhook ids (receivers dedupe on it)."""
        moved = 0
        with self._immediate() as conn:
            for part in chunks(sorted(set(ids)), 900):
                marks = ",".join("?" * len(part))
                moved += conn.execute(
                    "INSERT INTO deliveries (destination, webhook_id, profile_id, payload,"
                    " attempts, first_at, next_at) SELECT destination, webhook_id, profile_id,"
                    f" payload, 0, ?, ? FROM failed_deliveries WHERE id IN ({marks})",
                    [to_micros(now), to_micros(now), *part],
                ).rowcount
                conn.execute(f"DELETE FROM failed_deliveries WHERE id IN ({marks})", part)
        return moved
