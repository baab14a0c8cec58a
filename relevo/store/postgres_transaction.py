"""The processor's unit of work on PostgreSQL, where several worker processes write at once.

Concurrency: optimistic. The transaction runs at READ COMMITTED; every profile row carries a
``version``, bumped by every write. ``load``/``load_many`` remember the version they read;
``save`` updates a loaded profile only ``WHERE version = <the one read>`` (and it is still
live), and inserts a new one only if its id is free; ``absorb`` retires the merged profile on
the same condition. A row changed, merged away or erased by another transaction since it was
read makes the statement match nothing, and ``TransactionConflict`` is raised: the caller rolls
back and runs the unit of work again. An identifier linked by two transactions at once hits
the primary key of ``identities``; a deadlock or serialization failure is detected by the
server; all three surface as ``TransactionConflict`` too (see ``PostgresBase._transaction``).

Why not ``SELECT ... FOR UPDATE``: the processor discovers which profiles it touches while it
applies events (identifiers lead to owners, merges to other owners), so locks could not be
taken in one deterministic order, and a reader blocked on a lock would then see a profile that
had been merged away. Workers own distinct partitions, so conflicts are rare (a merge across
partitions, an erasure) and a retry is cheaper than locking every profile read.

Every write about a profile in a cycle (links, timeline, memberships, outbox, timers, feedback)
comes with a ``save`` or ``absorb`` of that profile, so the version check covers them all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from relevo.decisions.log import Feedback
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile, decode_profile, encode_profile
from relevo.segments.changes import MembershipChange
from relevo.store.base import JournalEntry, OutboxRow, TimelineEntry, TransactionConflict
from relevo.store.postgres_db import Connection, insert_rows
from relevo.store.timeconv import to_micros

# numbers this transaction's feedback rows just before it commits; the lock (one per schema)
# is held until the commit, so the learner's cursor sees them in commit order
NUMBER_FEEDBACK = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "'relevo.feedback:' || coalesce(current_schema(), ''), 0))",
    "UPDATE feedback SET seq = numbered.seq FROM (SELECT id, nextval('feedback_seq') AS seq"
    " FROM (SELECT id FROM feedback WHERE seq IS NULL ORDER BY id) AS pending) AS numbered"
    " WHERE feedback.id = numbered.id",
)


class PostgresTransaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._versions: dict[str, int] = {}  # profile id -> the version this transaction has
        self._feedback = False  # whether rows await their seq
        self._conflict: TransactionConflict | None = None

    def _conflicted(self, message: str) -> TransactionConflict:
        # remembered: a transaction that hit a conflict never commits, even if it is swallowed
        self._conflict = TransactionConflict(message)
        return self._conflict

    def before_commit(self) -> None:
        if self._conflict is not None:
            raise self._conflict
        if self._feedback:
            for statement in NUMBER_FEEDBACK:
                self._conn.execute(statement)

    def profile_of(self, identifier: Identifier) -> str | None:
        row = self._conn.execute(
            "SELECT profile_id FROM identities WHERE type = %s AND value = %s", identifier
        ).fetchone()
        return row[0] if row else None

    def identifiers_of(self, profile_id: str) -> list[Identifier]:
        found = self._conn.execute(
            "SELECT type, value FROM identities WHERE profile_id = %s", (profile_id,)
        ).fetchall()
        return [Identifier(t, v) for t, v in found]

    def owners(self, identifiers: list[Identifier]) -> dict[Identifier, str]:
        if not identifiers:
            return {}
        found = self._conn.execute(
            "SELECT i.type, i.value, i.profile_id FROM identities i"
            " JOIN unnest(%s::text[], %s::text[]) AS wanted (type, value)"
            " ON i.type = wanted.type AND i.value = wanted.value",
            ([i.type for i in identifiers], [i.value for i in identifiers]),
        ).fetchall()
        return {Identifier(t, v): profile_id for t, v, profile_id in found}

    def load_many(self, profile_ids: list[str]) -> dict[str, Profile]:
        if not profile_ids:
            return {}
        found = self._conn.execute(
            "SELECT id, state, version FROM profiles WHERE id = ANY(%s) AND merged_into IS NULL",
            (profile_ids,),
        ).fetchall()
        loaded: dict[str, Profile] = {}
        for profile_id, state, version in found:
            self._versions[profile_id] = version
            loaded[profile_id] = decode_profile(state)
        return loaded

    def load(self, profile_id: str) -> Profile | None:
        row = self._conn.execute(
            "SELECT state, version FROM profiles WHERE id = %s AND merged_into IS NULL",
            (profile_id,),
        ).fetchone()
        if row is None:
            return None
        self._versions[profile_id] = row[1]
        return decode_profile(row[0])

    def save(self, profiles: list[Profile]) -> None:
        now = datetime.now(UTC).isoformat()
        by_id = {p.id: p for p in profiles}
        known = sorted(pid for pid in by_id if pid in self._versions)  # one lock order
        new = sorted(pid for pid in by_id if pid not in self._versions)
        with self._conn.cursor() as cur:
            if known:
                cur.executemany(
                    "UPDATE profiles SET state = %s, updated_at = %s, version = version + 1"
                    " WHERE id = %s AND version = %s AND merged_into IS NULL",
                    [(encode_profile(by_id[p]), now, p, self._versions[p]) for p in known],
                )
                if cur.rowcount != len(known):
                    raise self._conflicted("a profile was changed by another transaction")
            if new:
                cur.executemany(
                    "INSERT INTO profiles (id, state, merged_into, updated_at, version)"
                    " VALUES (%s, %s, NULL, %s, 1) ON CONFLICT (id) DO NOTHING",
                    [(p, encode_profile(by_id[p]), now) for p in new],
                )
                if cur.rowcount != len(new):
                    raise self._conflicted("a new profile was created by another transaction")
        for profile_id in known:
            self._versions[profile_id] += 1
        for profile_id in new:
            self._versions[profile_id] = 1

    def link(self, links: list[tuple[Identifier, str, datetime]]) -> None:
        # no ON CONFLICT: an identifier another transaction linked first is a conflict
        insert_rows(
            self._conn,
            "identities",
            ("type", "value", "profile_id", "linked_at"),
            [(i.type, i.value, pid, at.isoformat()) for i, pid, at in links],
        )

    def absorb(self, survivor: str, merged: str) -> None:
        conn = self._conn
        # first retire the merged profile (its row lock also orders concurrent writers of it)
        sql = (
            "UPDATE profiles SET state = NULL, merged_into = %s, updated_at = %s,"
            " version = version + 1 WHERE id = %s AND merged_into IS NULL"
        )
        params: tuple[object, ...] = (survivor, datetime.now(UTC).isoformat(), merged)
        version = self._versions.pop(merged, None)
        if version is not None:
            sql += " AND version = %s"
            params += (version,)
        retired = conn.execute(sql, params).rowcount
        if version is not None and retired == 0:
            raise self._conflicted(f"profile {merged} was changed by another transaction")
        conn.execute(
            "UPDATE identities SET profile_id = %s WHERE profile_id = %s", (survivor, merged)
        )
        conn.execute(
            "UPDATE timeline SET profile_id = %s WHERE profile_id = %s", (survivor, merged)
        )
        conn.execute(
            "UPDATE profiles SET merged_into = %s WHERE merged_into = %s", (survivor, merged)
        )

    def append_timeline(self, entries: list[tuple[str, TimelineEntry]]) -> None:
        insert_rows(
            self._conn,
            "timeline",
            ("profile_id", "at", "message_id", "payload"),
            [(pid, to_micros(e.at), e.message_id, e.payload) for pid, e in entries],
        )

    def trim_timeline(self, profile_id: str, keep: int) -> int:
        return self._conn.execute(
            "DELETE FROM timeline WHERE seq IN (SELECT seq FROM timeline WHERE profile_id = %s"
            " ORDER BY at DESC, message_id DESC, seq DESC OFFSET %s)",
            (profile_id, keep),
        ).rowcount

    def journal(self, entry: JournalEntry) -> None:
        self._conn.execute(
            "INSERT INTO merge_journal (at, outcome, survivor, other, identifier, reason,"
            " message_id, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                entry.at.isoformat(),
                entry.outcome,
                entry.survivor,
                entry.other,
                entry.identifier,
                entry.reason,
                entry.message_id,
                entry.source,
            ),
        )

    def record_failure(
        self, stream: str, partition: int, offset: int, error: str, payload: bytes, at: datetime
    ) -> None:
        self._conn.execute(
            'INSERT INTO failed_events (at, stream, partition, "offset", error, payload)'
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (at.isoformat(), stream, partition, offset, error, payload),
        )

    def write_memberships(self, changes: list[MembershipChange]) -> None:
        # in order: one cycle may enter, exit and enter again; the last change is the state
        last = sorted(
            {(c.segment, c.profile_id): c for c in changes}.items(), key=lambda item: item[0]
        )
        with self._conn.cursor() as cur:
            entered = [(s, p, to_micros(c.at)) for (s, p), c in last if c.entered]
            if entered:
                cur.executemany(
                    "INSERT INTO segment_members (segment, profile_id, entered_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (segment, profile_id)"
                    " DO UPDATE SET entered_at = excluded.entered_at",
                    entered,
                )
            exited = [key for key, c in last if not c.entered]
            if exited:
                cur.executemany(
                    "DELETE FROM segment_members WHERE segment = %s AND profile_id = %s", exited
                )

    def append_outbox(self, rows: list[OutboxRow]) -> None:
        insert_rows(
            self._conn,
            "outbox",
            ("at", "kind", "profile_id", "payload"),
            [(r.at.isoformat(), r.kind, r.profile_id, r.payload) for r in rows],
        )

    def set_timers(self, timers: dict[str, datetime | None]) -> None:
        due = sorted((pid, to_micros(at)) for pid, at in timers.items() if at is not None)
        cleared = sorted((pid,) for pid, at in timers.items() if at is None)
        with self._conn.cursor() as cur:
            if due:
                cur.executemany(
                    "INSERT INTO segment_timers (profile_id, due_at) VALUES (%s, %s)"
                    " ON CONFLICT (profile_id) DO UPDATE SET due_at = excluded.due_at",
                    due,
                )
            if cleared:
                cur.executemany("DELETE FROM segment_timers WHERE profile_id = %s", cleared)

    def due_timers(self, now: datetime, limit: int) -> list[str]:
        # SKIP LOCKED: timers another worker's transaction holds are its to run
        found = self._conn.execute(
            "SELECT profile_id FROM segment_timers WHERE due_at <= %s ORDER BY due_at"
            " LIMIT %s FOR UPDATE SKIP LOCKED",
            (to_micros(now), limit),
        ).fetchall()
        return [r[0] for r in found]

    def record_feedback(self, profile_id: str, feedback: Feedback) -> bool:
        f = feedback
        inserted = (
            self._conn.execute(
                "INSERT INTO feedback (decision_id, offer, kind, placement, at, value,"
                " message_id, profile_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (decision_id, offer, kind) DO NOTHING",
                (
                    f.decision_id,
                    f.offer,
                    f.kind,
                    f.placement,
                    to_micros(f.at),
                    f.value,
                    f.message_id,
                    profile_id,
                ),
            ).rowcount
            > 0
        )
        self._feedback = self._feedback or inserted
        return inserted

    def count_impressions(self, keys: list[tuple[str, int | None]]) -> None:
        if not keys:
            return
        ordered = sorted(keys, key=lambda k: k[0])  # one lock order across workers
        with self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO impression_counters (key, count, hour) VALUES (%s, 1, %s)"
                " ON CONFLICT (key) DO UPDATE SET count = impression_counters.count + 1",
                ordered,
            )

    def offsets(self, stream: str) -> dict[int, int]:
        found = self._conn.execute(
            'SELECT partition, "offset" FROM offsets WHERE stream = %s', (stream,)
        ).fetchall()
        return {int(p): int(o) for p, o in found}

    def set_offset(
        self, stream: str, partition: int, offset: int, *, expected: int | None = None
    ) -> None:
        if expected is not None:
            row = self._conn.execute(
                'SELECT "offset" FROM offsets WHERE stream = %s AND partition = %s FOR UPDATE',
                (stream, partition),
            ).fetchone()
            stored = row[0] if row else 0
            if stored != expected:
                raise self._conflicted(
                    f"offset of {stream}/{partition} moved from {expected} to {stored}"
                )
        self._conn.execute(
            'INSERT INTO offsets (stream, partition, "offset") VALUES (%s, %s, %s)'
            ' ON CONFLICT (stream, partition) DO UPDATE SET "offset" = excluded."offset"',
            (stream, partition, offset),
        )
