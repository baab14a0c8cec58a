"""The embedded state store: one SQLite file, WAL mode, one writer at a time.

The processor is the only writer of profile state; its ``transaction()`` holds the write lock
for the whole unit of work, so a state change and its consumer offsets commit together.
Reads (the profile API) run on per-thread connections and never block the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from relevo.decisions.log import Feedback
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile, decode_profile, encode_profile
from relevo.segments.changes import MembershipChange
from relevo.store import rows as convert
from relevo.store.base import (
    ApiKey,
    ErasedPerson,
    JournalEntry,
    OutboxRow,
    Source,
    StoreCapabilities,
    StoredSegment,
    TimelineEntry,
    TransactionConflict,
    chunks,
)
from relevo.store.sqlite_leases import SQLiteLeases
from relevo.store.timeconv import from_micros, to_micros


class SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def profile_of(self, identifier: Identifier) -> str | None:
        row = self._conn.execute(
            "SELECT profile_id FROM identities WHERE type = ? AND value = ?", identifier
        ).fetchone()
        return row[0] if row else None

    def identifiers_of(self, profile_id: str) -> list[Identifier]:
        rows = self._conn.execute(
            "SELECT type, value FROM identities WHERE profile_id = ?", (profile_id,)
        ).fetchall()
        return [Identifier(t, v) for t, v in rows]

    def owners(self, identifiers: list[Identifier]) -> dict[Identifier, str]:
        by_type: dict[str, list[str]] = {}
        for ident in identifiers:
            by_type.setdefault(ident.type, []).append(ident.value)
        found: dict[Identifier, str] = {}
        for id_type, values in by_type.items():  # type = ? AND value IN (...) uses the key
            for part in chunks(values, 800):
                rows = self._conn.execute(
                    "SELECT value, profile_id FROM identities WHERE type = ?"
                    f" AND value IN ({','.join('?' * len(part))})",
                    [id_type, *part],
                )
                for value, profile_id in rows:
                    found[Identifier(id_type, value)] = profile_id
        return found

    def load_many(self, profile_ids: list[str]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        for part in chunks(profile_ids, 800):
            rows = self._conn.execute(
                f"SELECT id, state FROM profiles WHERE id IN ({','.join('?' * len(part))})"
                " AND merged_into IS NULL",
                part,
            )
            for profile_id, state in rows:
                found[profile_id] = decode_profile(state)
        return found

    def load(self, profile_id: str) -> Profile | None:
        row = self._conn.execute(
            "SELECT state FROM profiles WHERE id = ? AND merged_into IS NULL", (profile_id,)
        ).fetchone()
        return decode_profile(row[0]) if row else None

    def save(self, profiles: list[Profile]) -> None:
        now = datetime.now(UTC).isoformat()
        self._conn.executemany(
            "INSERT INTO profiles (id, state, merged_into, updated_at) VALUES (?, ?, NULL, ?)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            [(p.id, encode_profile(p), now) for p in profiles],
        )

    def link(self, links: list[tuple[Identifier, str, datetime]]) -> None:
        self._conn.executemany(
            "INSERT INTO identities (type, value, profile_id, linked_at) VALUES (?, ?, ?, ?)",
            [(i.type, i.value, pid, at.isoformat()) for i, pid, at in links],
        )

    def absorb(self, survivor: str, merged: str) -> None:
        conn = self._conn
        conn.execute(
            "UPDATE identities SET profile_id = ? WHERE profile_id = ?", (survivor, merged)
        )
        conn.execute("UPDATE timeline SET profile_id = ? WHERE profile_id = ?", (survivor, merged))
        conn.execute(
            "UPDATE profiles SET merged_into = ? WHERE merged_into = ?", (survivor, merged)
        )
        conn.execute(
            "UPDATE profiles SET state = NULL, merged_into = ?, updated_at = ? WHERE id = ?",
            (survivor, datetime.now(UTC).isoformat(), merged),
        )

    def append_timeline(self, entries: list[tuple[str, TimelineEntry]]) -> None:
        self._conn.executemany(
            "INSERT INTO timeline (profile_id, at, message_id, payload) VALUES (?, ?, ?, ?)",
            [(pid, to_micros(e.at), e.message_id, e.payload) for pid, e in entries],
        )

    def trim_timeline(self, profile_id: str, keep: int) -> int:
        cursor = self._conn.execute(
            "DELETE FROM timeline WHERE rowid IN (SELECT rowid FROM timeline WHERE profile_id = ?"
            " ORDER BY at DESC, message_id DESC LIMIT -1 OFFSET ?)",
            (profile_id, keep),
        )
        return cursor.rowcount

    def journal(self, entry: JournalEntry) -> None:
        self._conn.execute(
            "INSERT INTO merge_journal (at, outcome, survivor, other, identifier, reason,"
            " message_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            " VALUES (?, ?, ?, ?, ?, ?)",
            (at.isoformat(), stream, partition, offset, error, payload),
        )

    def write_memberships(self, changes: list[MembershipChange]) -> None:
        # in order: one cycle may enter, exit and enter again; the last change is the state
        last = {(c.segment, c.profile_id): c for c in changes}.values()
        self._conn.executemany(
            "INSERT OR REPLACE INTO segment_members (segment, profile_id, entered_at)"
            " VALUES (?, ?, ?)",
            [(c.segment, c.profile_id, to_micros(c.at)) for c in last if c.entered],
        )
        self._conn.executemany(
            "DELETE FROM segment_members WHERE segment = ? AND profile_id = ?",
            [(c.segment, c.profile_id) for c in last if not c.entered],
        )

    def append_outbox(self, rows: list[OutboxRow]) -> None:
        self._conn.executemany(
            "INSERT INTO outbox (at, kind, profile_id, payload) VALUES (?, ?, ?, ?)",
            [(r.at.isoformat(), r.kind, r.profile_id, r.payload) for r in rows],
        )

    def set_timers(self, timers: dict[str, datetime | None]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO segment_timers (profile_id, due_at) VALUES (?, ?)",
            [(pid, to_micros(due)) for pid, due in timers.items() if due is not None],
        )
        self._conn.executemany(
            "DELETE FROM segment_timers WHERE profile_id = ?",
            [(pid,) for pid, due in timers.items() if due is None],
        )

    def due_timers(self, now: datetime, limit: int) -> list[str]:
        rows = self._conn.execute(
            "SELECT profile_id FROM segment_timers WHERE due_at <= ? ORDER BY due_at LIMIT ?",
            (to_micros(now), limit),
        )
        return [r[0] for r in rows]

    def record_feedback(self, profile_id: str, feedback: Feedback) -> bool:
        f = feedback
        return (
            self._conn.execute(
                "INSERT OR IGNORE INTO feedback (decision_id, offer, kind, placement, at, value,"
                " message_id, profile_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    def count_impressions(self, keys: list[tuple[str, int | None]]) -> None:
        self._conn.executemany(
            "INSERT INTO impression_counters (key, count, hour) VALUES (?, 1, ?)"
            " ON CONFLICT (key) DO UPDATE SET count = count + 1",
            keys,
        )

    def offsets(self, stream: str) -> dict[int, int]:
        rows = self._conn.execute(
            'SELECT partition, "offset" FROM offsets WHERE stream = ?', (stream,)
        ).fetchall()
        return dict(rows)

    def set_offset(
        self, stream: str, partition: int, offset: int, *, expected: int | None = None
    ) -> None:
        if expected is not None:
            row = self._conn.execute(
                'SELECT "offset" FROM offsets WHERE stream = ? AND partition = ?',
                (stream, partition),
            ).fetchone()
            stored = row[0] if row else 0
            if stored != expected:
                raise TransactionConflict(
                    f"offset of {stream}/{partition} moved from {expected} to {stored}"
                )
        self._conn.execute(
            'INSERT INTO offsets (stream, partition, "offset") VALUES (?, ?, ?)'
            ' ON CONFLICT (stream, partition) DO UPDATE SET "offset" = excluded."offset"',
            (stream, partition, offset),
        )


class SQLiteStore(SQLiteLeases):
    """``sqlite:///path.db``: the embedded default."""

    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities(shared_between_processes=False)

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTransaction]:
        with self._immediate() as conn:
            yield SQLiteTransaction(conn)

    def find(self, ref: str | Identifier) -> Profile | None:
        conn = self._reader()
        if isinstance(ref, Identifier):
            row = conn.execute(
                "SELECT profile_id FROM identities WHERE type = ? AND value = ?", ref
            ).fetchone()
            if row is None:
                return None
            ref = row[0]
        for _ in range(64):  # merged stubs point (at most a short chain) at the survivor
            row = conn.execute(
                "SELECT state, merged_into FROM profiles WHERE id = ?", (ref,)
            ).fetchone()
            if row is None:
                return None
            if row[1] is None:
                return decode_profile(row[0])
            ref = row[1]
        return None

    def identifiers(self, profile_id: str) -> list[Identifier]:
        rows = self._reader().execute(
            "SELECT type, value FROM identities WHERE profile_id = ? ORDER BY type, value",
            (profile_id,),
        )
        return [Identifier(t, v) for t, v in rows]

    def timeline(
        self, profile_id: str, *, before: tuple[int, str, int] | None, limit: int
    ) -> list[TimelineEntry]:
        sql = "SELECT at, message_id, payload, rowid FROM timeline WHERE profile_id = ?"
        params: list[Any] = [profile_id]
        if before is not None:
            sql += " AND (at, message_id, rowid) < (?, ?, ?)"
            params.extend(before)
        sql += " ORDER BY at DESC, message_id DESC, rowid DESC LIMIT ?"
        params.append(limit)
        rows = self._reader().execute(sql, params).fetchall()
        return [TimelineEntry(from_micros(at), mid, payload, seq) for at, mid, payload, seq in rows]

    def journal_of(self, profile_id: str) -> list[JournalEntry]:
        rows = self._reader().execute(
            "SELECT at, outcome, survivor, other, identifier, reason, message_id, source"
            " FROM merge_journal WHERE survivor = ? OR other = ? ORDER BY id",
            (profile_id, profile_id),
        )
        return [JournalEntry(datetime.fromisoformat(r[0]), *r[1:]) for r in rows]

    def erase(self, profile_id: str, suppress: list[str], at: datetime) -> ErasedPerson:
        with self._immediate() as conn:
            ids = [profile_id] + [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM profiles WHERE merged_into = ?", (profile_id,)
                )
            ]
            identifiers = [
                Identifier(t, v)
                for t, v in conn.execute(
                    "SELECT type, value FROM identities WHERE profile_id = ?", (profile_id,)
                )
            ]
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM identities WHERE profile_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM timeline WHERE profile_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM profiles WHERE id IN ({marks})", ids)
            conn.execute(
                f"DELETE FROM merge_journal WHERE survivor IN ({marks}) OR other IN ({marks})",
                ids + ids,
            )
            for table in (
                "segment_members",
                "segment_timers",
                "outbox",
                "deliveries",
                "failed_deliveries",
                "decisions",
                "feedback",
            ):
                conn.execute(f"DELETE FROM {table} WHERE profile_id IN ({marks})", ids)
            conn.executemany(
                "INSERT OR IGNORE INTO suppressions (hash, at) VALUES (?, ?)",
                [(h, at.isoformat()) for h in suppress],
            )
        return ErasedPerson(ids, identifiers)

    def suppressed(self) -> set[str]:
        return {r[0] for r in self._reader().execute("SELECT hash FROM suppressions")}

    # -- segments ---------------------------------------------------------------------------

    def list_segments(self) -> list[StoredSegment]:
        rows = self._reader().execute(
            "SELECT name, definition, version, backfilled_version FROM segments ORDER BY name"
        )
        return [StoredSegment(n, d.encode(), v, b) for n, d, v, b in rows]

    def put_segment(self, segment: StoredSegment, at: datetime) -> None:
        self._write(
            "INSERT INTO segments (name, definition, version, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,"
            " version = excluded.version, updated_at = excluded.updated_at",
            (segment.name, segment.definition.decode(), segment.version, at.isoformat()),
        )

    def delete_segment(self, name: str) -> bool:
        with self._immediate() as conn:
            deleted = conn.execute("DELETE FROM segments WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM segment_members WHERE segment = ?", (name,))
        return deleted > 0

    def mark_backfilled(self, name: str, version: str) -> None:
        self._write(
            "UPDATE segments SET backfilled_version = ? WHERE name = ? AND version = ?",
            (version, name, version),
        )

    def segment_size(self, name: str) -> int:
        row = (
            self._reader()
            .execute("SELECT count(*) FROM segment_members WHERE segment = ?", (name,))
            .fetchone()
        )
        return int(row[0])

    def segment_members(
        self, name: str, after: str | None, limit: int
    ) -> list[tuple[str, datetime]]:
        rows = self._reader().execute(
            "SELECT profile_id, entered_at FROM segment_members WHERE segment = ?"
            " AND profile_id > ? ORDER BY profile_id LIMIT ?",
            (name, after or "", limit),
        )
        return [(pid, from_micros(at)) for pid, at in rows]

    def memberships(self, profile_id: str) -> dict[str, datetime]:
        rows = self._reader().execute(
            "SELECT segment, entered_at FROM segment_members WHERE profile_id = ? ORDER BY segment",
            (profile_id,),
        )
        return {segment: from_micros(at) for segment, at in rows}

    def next_timer_at(self) -> datetime | None:
        row = self._reader().execute("SELECT min(due_at) FROM segment_timers").fetchone()
        return from_micros(row[0]) if row[0] is not None else None

    def profile_count(self) -> int:
        row = (
            self._reader()
            .execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL")
            .fetchone()
        )
        return int(row[0])

    def profile_ids(self, after: str | None, limit: int) -> list[str]:
        rows = self._reader().execute(
            "SELECT id FROM profiles WHERE merged_into IS NULL AND id > ? ORDER BY id LIMIT ?",
            (after or "", limit),
        )
        return [r[0] for r in rows]

    # -- keys and sources -------------------------------------------------------------------

    def create_key(self, key: ApiKey, secret_hash: str) -> None:
        self._write(
            "INSERT INTO api_keys (id, kind, source, secret_hash, created_at) VALUES (?,?,?,?,?)",
            (key.id, key.kind, key.source, secret_hash, key.created_at.isoformat()),
        )

    def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = (
            self._reader()
            .execute(
                "SELECT id, kind, source, created_at, revoked_at FROM api_keys"
                " WHERE secret_hash = ?",
                (secret_hash,),
            )
            .fetchone()
        )
        return convert.api_key(row) if row else None

    def list_keys(self) -> list[ApiKey]:
        rows = self._reader().execute(
            "SELECT id, kind, source, created_at, revoked_at FROM api_keys ORDER BY created_at"
        )
        return [convert.api_key(r) for r in rows]

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        return (
            self._write(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at.isoformat(), key_id),
            )
            > 0
        )

    def upsert_source(self, source: Source) -> None:
        self._write(
            "INSERT INTO sources (name, allowed_origins) VALUES (?, ?) ON CONFLICT (name)"
            " DO UPDATE SET allowed_origins = excluded.allowed_origins",
            (source.name, msgspec.json.encode(source.allowed_origins).decode()),
        )

    def get_source(self, name: str) -> Source | None:
        row = (
            self._reader()
            .execute("SELECT name, allowed_origins FROM sources WHERE name = ?", (name,))
            .fetchone()
        )
        return Source(row[0], msgspec.json.decode(row[1])) if row else None

    def list_sources(self) -> list[Source]:
        rows = self._reader().execute("SELECT name, allowed_origins FROM sources ORDER BY name")
        return [Source(name, msgspec.json.decode(origins)) for name, origins in rows]

    def audit(self, at: datetime, actor: str, action: str, target: str, details: Any) -> None:
        self._write(
            "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
            (at.isoformat(), actor, action, target, msgspec.json.encode(details).decode()),
        )
