"""The catalog, the decision log, feedback, impression counters and policy state (PostgreSQL)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from relevo.decisions.log import (
    DecisionRecord,
    Feedback,
    LoggedDecision,
    decode_record,
    encode_record,
)
from relevo.store import rows
from relevo.store.base import StoredPolicy, TransactionConflict, VariantCounts
from relevo.store.postgres_deliveries import PostgresDeliveries
from relevo.store.timeconv import to_micros

LEARNER_STREAM = "feedback"
READ_CHUNK = 2000


class PostgresDecisions(PostgresDeliveries):
    # -- catalog ------------------------------------------------------------------------------

    def catalog_items(self) -> list[tuple[str, str, bytes]]:
        found = self._fetchall("SELECT kind, id, definition FROM catalog ORDER BY kind, id")
        return [(kind, item, definition.encode()) for kind, item, definition in found]

    def put_catalog_item(self, kind: str, item: str, definition: bytes, at: datetime) -> None:
        self._write(
            "INSERT INTO catalog (kind, id, definition, updated_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (kind, id) DO UPDATE SET definition = excluded.definition,"
            " updated_at = excluded.updated_at",
            (kind, item, definition.decode(), at.isoformat()),
        )

    def delete_catalog_item(self, kind: str, item: str) -> bool:
        return self._write("DELETE FROM catalog WHERE kind = %s AND id = %s", (kind, item)) > 0

    def catalog_stamp(self) -> tuple[int, str | None]:
        """Changes show as a new (count, latest update): cheap enough to poll."""
        row = self._fetchone("SELECT count(*), max(updated_at) FROM catalog")
        return (int(row[0]), row[1]) if row else (0, None)

    # -- decision log ---------------------------------------------------------------------------

    def append_decisions(self, records: list[DecisionRecord]) -> None:
        """One statement for the whole batch (arrays unnested), so it commits as one."""
        if not records:
            return
        self._write(
            "INSERT INTO decisions (id, at, placement, profile_id, experiment, variant, record)"
            " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::bytea[]) ON CONFLICT (id) DO NOTHING",
            (
                [r.id for r in records],
                [to_micros(r.at) for r in records],
                [r.placement for r in records],
                [r.profile_id for r in records],
                [r.experiment for r in records],
                [r.variant for r in records],
                [encode_record(r) for r in records],
            ),
        )

    def decision_records(self, ids: list[str]) -> dict[str, DecisionRecord]:
        if not ids:
            return {}
        found = self._fetchall("SELECT record FROM decisions WHERE id = ANY(%s)", (ids,))
        decoded = [decode_record(record) for (record,) in found]
        return {record.id: record for record in decoded}

    def logged(
        self, placement: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[LoggedDecision]:
        """The placement's decisions in time order, each with its feedback (a connection is
        held only while a chunk is read, never while the caller consumes it)."""
        start = to_micros(since) if since else -(2**62)
        end = to_micros(until) if until else 2**62
        after = (start - 1, "")
        while True:
            with self._connection() as conn:
                found = conn.execute(
                    "SELECT id, at, record FROM decisions WHERE placement = %s"
                    " AND (at, id) > (%s, %s) AND at < %s ORDER BY at, id LIMIT %s",
                    (placement, *after, end, READ_CHUNK),
                ).fetchall()
                kinds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
                if found:
                    for decision_id, offer, kind in conn.execute(
                        "SELECT decision_id, offer, kind FROM feedback WHERE decision_id = ANY(%s)",
                        ([row[0] for row in found],),
                    ):
                        kinds[decision_id][kind].add(offer)
            if not found:
                return
            for decision_id, _, record in found:
                got = kinds.get(decision_id, {})
                yield LoggedDecision(
                    record=decode_record(record),
                    impressions=frozenset(got.get("impression", ())),
                    clicks=frozenset(got.get("click", ())),
                    conversions=frozenset(got.get("conversion", ())),
                )
            after = (found[-1][1], found[-1][0])

    def variant_counts(self, experiment: str | None, placement: str) -> list[VariantCounts]:
        """Per variant (or per holdout/personalised, with ``experiment=None``): decisions, and
        decisions with an impression, a click, a conversion; conversion value."""
        where = "d.experiment = %s" if experiment else "d.placement = %s"
        found = self._fetchall(
            "SELECT coalesce(d.variant, ''), count(DISTINCT d.id),"
            " count(DISTINCT CASE WHEN f.kind = 'impression' THEN d.id END),"
            " count(DISTINCT CASE WHEN f.kind = 'click' THEN d.id END),"
            " count(DISTINCT CASE WHEN f.kind = 'conversion' THEN d.id END),"
            " coalesce(sum(CASE WHEN f.kind = 'conversion' THEN f.value END), 0)"
            f" FROM decisions d LEFT JOIN feedback f ON f.decision_id = d.id WHERE {where}"
            " GROUP BY coalesce(d.variant, '') ORDER BY 1",
            (experiment or placement,),
        )
        return [
            VariantCounts(v, int(d), int(i), int(c), int(n), float(s)) for v, d, i, c, n, s in found
        ]

    # -- feedback and learning ---------------------------------------------------------------

    def feedback_after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]:
        """Feedback past the learner's cursor. ``seq`` grows in commit order (see the
        migration), so a row committed late never lands behind a cursor already past it."""
        found = self._fetchall(
            f"SELECT seq, {rows.FEEDBACK_COLUMNS} FROM feedback WHERE seq > %s"
            " ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [(row[0], rows.feedback(row[1:])) for row in found]

    def feedback_of(self, decision_ids: list[str]) -> list[tuple[int, Feedback]]:
        if not decision_ids:
            return []
        found = self._fetchall(
            f"SELECT seq, {rows.FEEDBACK_COLUMNS} FROM feedback WHERE decision_id = ANY(%s)"
            " AND seq IS NOT NULL ORDER BY seq",
            (decision_ids,),
        )
        return [(row[0], rows.feedback(row[1:])) for row in found]

    def impression_counters(self, since_hour: int) -> dict[str, int]:
        found = self._fetchall(
            "SELECT key, count FROM impression_counters WHERE hour IS NULL OR hour >= %s",
            (since_hour,),
        )
        return {key: int(count) for key, count in found}

    def prune_counters(self, before_hour: int) -> int:
        return self._write("DELETE FROM impression_counters WHERE hour < %s", (before_hour,))

    def policies(self) -> dict[str, int]:
        """Each stored policy's version (cheap: decide nodes poll it)."""
        return {name: int(v) for name, v in self._fetchall("SELECT name, version FROM policies")}

    def load_policies(self, names: list[str] | None = None) -> list[StoredPolicy]:
        sql = "SELECT name, algorithm, state, version FROM policies"
        found = (
            self._fetchall(sql)
            if names is None
            else self._fetchall(sql + " WHERE name = ANY(%s)", (names,))
        )
        return [
            StoredPolicy(name, algo, bytes(state), int(version))
            for name, algo, state, version in found
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
        with self._transaction() as conn, conn.cursor() as cur:
            if expected is not None:
                row = cur.execute(
                    'SELECT "offset" FROM offsets WHERE stream = %s AND partition = 0 FOR UPDATE',
                    (LEARNER_STREAM,),
                ).fetchone()
                stored = row[0] if row else 0
                if stored != expected:
                    raise TransactionConflict(
                        f"the learner's cursor moved from {expected} to {stored}"
                    )
            cur.executemany(
                "INSERT INTO policies (name, algorithm, state, version, updated_at)"
                " VALUES (%s, %s, %s, 1, %s) ON CONFLICT (name) DO UPDATE SET"
                " algorithm = excluded.algorithm, state = excluded.state,"
                " version = policies.version + 1, updated_at = excluded.updated_at",
                [
                    (name, algo, state, at.isoformat())
                    for name, (algo, state) in sorted(states.items())
                ],
            )
            cur.execute(
                'INSERT INTO offsets (stream, partition, "offset") VALUES (%s, 0, %s)'
                ' ON CONFLICT (stream, partition) DO UPDATE SET "offset" = excluded."offset"',
                (LEARNER_STREAM, cursor),
            )

    def learner_cursor(self) -> int:
        row = self._fetchone(
            'SELECT "offset" FROM offsets WHERE stream = %s AND partition = 0', (LEARNER_STREAM,)
        )
        return int(row[0]) if row else 0
