"""The catalog, the decision log, feedback, impression counters and policy state (SQLite)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from relevo.decisions.log import (
    DecisionRecord,
    Feedback,
    LoggedDecision,
    decode_record,
    encode_record,
)
from relevo.store import rows as convert
from relevo.store.base import StoredPolicy, TransactionConflict, VariantCounts, chunks
from relevo.store.sqlite_deliveries import SQLiteDeliveries
from relevo.store.timeconv import to_micros

LEARNER_STREAM = "feedback"
READ_CHUNK = 2000
ROWS_PER_INSERT = 100


class SQLiteDecisions(SQLiteDeliveries):
    # -- catalog ------------------------------------------------------------------------------

    def catalog_items(self) -> list[tuple[str, str, bytes]]:
        rows = self._reader().execute("SELECT kind, id, definition FROM catalog ORDER BY kind, id")
        return [(kind, item, definition.encode()) for kind, item, definition in rows]

    def put_catalog_item(self, kind: str, item: str, definition: bytes, at: datetime) -> None:
        self._write(
            "INSERT INTO catalog (kind, id, definition, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, id) DO UPDATE SET definition = excluded.definition,"
            " updated_at = excluded.updated_at",
            (kind, item, definition.decode(), at.isoformat()),
        )

    def delete_catalog_item(self, kind: str, item: str) -> bool:
        return self._write("DELETE FROM catalog WHERE kind = ? AND id = ?", (kind, item)) > 0

    def catalog_stamp(self) -> tuple[int, str | None]:
        """Changes show as a new (count, latest update): cheap enough to poll."""
        row = self._reader().execute("SELECT count(*), max(updated_at) FROM catalog").fetchone()
        return int(row[0]), row[1]

    # -- decision log ---------------------------------------------------------------------------

    def append_decisions(self, records: list[DecisionRecord]) -> None:
        # one multi-row INSERT per chunk, not executemany: a statement per row would release
        # and take back the GIL per row, stealing the decide thread's core at every row
        rows = [
            (r.id, to_micros(r.at), r.placement, r.profile_id, r.experiment, r.variant)
            for r in records
        ]
        with self._immediate() as conn:
            for part, chunk in zip(
                chunks(rows, ROWS_PER_INSERT), chunks(records, ROWS_PER_INSERT), strict=True
            ):
                values = ",".join("(?, ?, ?, ?, ?, ?, ?)" * 1 for _ in part)
                params: list[Any] = []
                for row, record in zip(part, chunk, strict=True):
                    params.extend(row)
                    params.append(encode_record(record))
                conn.execute(
                    "INSERT OR IGNORE INTO decisions"
                    " (id, at, placement, profile_id, experiment, variant, record)"
                    f" VALUES {values}",
                    params,
                )

    def decision_records(self, ids: list[str]) -> dict[str, DecisionRecord]:
        found: dict[str, DecisionRecord] = {}
        for part in chunks(ids, 800):
            rows = self._reader().execute(
                f"SELECT record FROM decisions WHERE id IN ({','.join('?' * len(part))})", part
            )
            for (record,) in rows:
                decoded = decode_record(record)
                found[decoded.id] = decoded
        return found

    def logged(
        self, placement: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[LoggedDecision]:
        """The placement's decisions in time order, each with its feedback."""
        start = to_micros(since) if since else -(2**62)
        end = to_micros(until) if until else 2**62
        conn = self._reader()
        after = (start - 1, "")
        while True:
            rows = conn.execute(
                "SELECT id, at, record FROM decisions WHERE placement = ? AND (at, id) > (?, ?)"
                " AND at < ? ORDER BY at, id LIMIT ?",
                (placement, *after, end, READ_CHUNK),
            ).fetchall()
            if not rows:
                return
            kinds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
            ids = [row[0] for row in rows]
            for part in chunks(ids, 800):
                for decision_id, offer, kind in conn.execute(
                    "SELECT decision_id, offer, kind FROM feedback"
                    f" WHERE decision_id IN ({','.join('?' * len(part))})",
                    part,
                ):
                    kinds[decision_id][kind].add(offer)
            for decision_id, _, record in rows:
                got = kinds.get(decision_id, {})
                yield LoggedDecision(
                    record=decode_record(record),
                    impressions=frozenset(got.get("impression", ())),
                    clicks=frozenset(got.get("click", ())),
                    conversions=frozenset(got.get("conversion", ())),
                )
            after = (rows[-1][1], rows[-1][0])

    def variant_counts(self, experiment: str | None, placement: str) -> list[VariantCounts]:
        """Per variant (or per holdout/personalised, with ``experiment=None``): decisions, and
        decisions with an impression, a click, a conversion; conversion value."""
        where = "d.experiment = ?" if experiment else "d.placement = ?"
        rows = self._reader().execute(
            "SELECT coalesce(d.variant, ''), count(DISTINCT d.id),"
            " count(DISTINCT CASE WHEN f.kind = 'impression' THEN d.id END),"
            " count(DISTINCT CASE WHEN f.kind = 'click' THEN d.id END),"
            " count(DISTINCT CASE WHEN f.kind = 'conversion' THEN d.id END),"
            " coalesce(sum(CASE WHEN f.kind = 'conversion' THEN f.value END), 0)"
            f" FROM decisions d LEFT JOIN feedback f ON f.decision_id = d.id WHERE {where}"
            " GROUP BY coalesce(d.variant, '') ORDER BY 1",
            (experiment or placement,),
        )
        return [VariantCounts(*row) for row in rows]

    # -- feedback and learning ---------------------------------------------------------------

    def feedback_after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]:
        rows = self._reader().execute(
            "SELECT seq, decision_id, offer, kind, placement, at, value, message_id"
            " FROM feedback WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [(row[0], convert.feedback(row[1:])) for row in rows]

    def feedback_of(self, decision_ids: list[str]) -> list[tuple[int, Feedback]]:
        found: list[tuple[int, Feedback]] = []
        for part in chunks(decision_ids, 800):
            rows = self._reader().execute(
                "SELECT seq, decision_id, offer, kind, placement, at, value, message_id"
                f" FROM feedback WHERE decision_id IN ({','.join('?' * len(part))})",
                part,
            )
            found.extend((row[0], convert.feedback(row[1:])) for row in rows)
        return found

    def impression_counters(self, since_hour: int) -> dict[str, int]:
        rows = self._reader().execute(
            "SELECT key, count FROM impression_counters WHERE hour IS NULL OR hour >= ?",
            (since_hour,),
        )
        return dict(rows.fetchall())

    def prune_counters(self, before_hour: int) -> int:
        return self._write("DELETE FROM impression_counters WHERE hour < ?", (before_hour,))

    def policies(self) -> dict[str, int]:
        """Each stored policy's version (cheap: decide nodes poll it)."""
        return dict(self._reader().execute("SELECT name, version FROM policies").fetchall())

    def load_policies(self, names: list[str] | None = None) -> list[StoredPolicy]:
        sql = "SELECT name, algorithm, state, version FROM policies"
        if names is None:
            rows = self._reader().execute(sql).fetchall()
        else:
            rows = []
            for part in chunks(names, 800):
                rows += (
                    self._reader()
                    .execute(f"{sql} WHERE name IN ({','.join('?' * len(part))})", part)
                    .fetchall()
                )
        return [
            StoredPolicy(name, algo, bytes(state), version) for name, algo, state, version in rows
        ]

    def save_policies(
        self,
        states: dict[str, tuple[str, bytes]],
        cursor: int,
        at: datetime,
        *,
        expected: int | None = None,
    ) -> None:
        """Store learned states (each gets a new version) with the learner's feedback cursor;
        with ``expected``, only if the stored cursor is still that (else TransactionConflict:
        another learner took over meanwhile)."""
        with self._immediate() as conn:
            if expected is not None:
                row = conn.execute(
                    'SELECT "offset" FROM offsets WHERE stream = ? AND partition = 0',
                    (LEARNER_STREAM,),
                ).fetchone()
                stored = row[0] if row else 0
                if stored != expected:
                    raise TransactionConflict(
                        f"the learner's cursor moved from {expected} to {stored}"
                    )
            conn.executemany(
                "INSERT INTO policies (name, algorithm, state, version, updated_at)"
                " VALUES (?, ?, ?, 1, ?) ON CONFLICT (name) DO UPDATE SET"
                " algorithm = excluded.algorithm, state = excluded.state,"
                " version = policies.version + 1, updated_at = excluded.updated_at",
                [(name, algo, state, at.isoformat()) for name, (algo, state) in states.items()],
            )
            conn.execute(
                'INSERT INTO offsets (stream, partition, "offset") VALUES (?, 0, ?)'
                ' ON CONFLICT (stream, partition) DO UPDATE SET "offset" = excluded."offset"',
                (LEARNER_STREAM, cursor),
            )

    def learner_cursor(self) -> int:
        row = (
            self._reader()
            .execute(
                'SELECT "offset" FROM offsets WHERE stream = ? AND partition = 0',
                (LEARNER_STREAM,),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0
