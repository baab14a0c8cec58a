"""The shared state store on PostgreSQL: several worker processes and nodes use one database.

``postgresql://`` (or ``postgres://``) URLs are libpq's, passed as they are: a schema can be
chosen with ``?options=-csearch_path%3Dname``. The schema mirrors the embedded store's (see
``migrations/postgres``), with times and payloads stored the same way.

Reads (``find``, ``timeline``, ``segment_size`` ...) and single writes run on pooled
connections in autocommit mode. ``transaction()`` is the processor's unit of work: READ
COMMITTED with optimistic versions on profiles, so a concurrent change of the same profile
makes it raise ``TransactionConflict`` (retry the unit of work) instead of losing an update;
the details are in ``postgres_transaction``. Commits are durable (``synchronous_commit`` must
be on; it is checked when the store opens).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar

import msgspec

from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile, decode_profile
from relevo.store import rows
from relevo.store.base import (
    ApiKey,
    ErasedPerson,
    JournalEntry,
    Source,
    StoreCapabilities,
    StoredSegment,
    TimelineEntry,
)
from relevo.store.postgres_leases import PostgresLeases
from relevo.store.postgres_transaction import PostgresTransaction
from relevo.store.timeconv import from_micros

MAX_MERGE_CHAIN = 64

# a profile by id, following merged stubs to the survivor, in one round trip
FIND_BY_ID = f"""
WITH RECURSIVE chain (id, state, merged_into, depth) AS (
    SELECT id, state, merged_into, 0 FROM profiles WHERE id = %s
    UNION ALL
    SELECT p.id, p.state, p.merged_into, chain.depth + 1
    FROM profiles p JOIN chain ON p.id = chain.merged_into
    WHERE chain.depth < {MAX_MERGE_CHAIN}
)
SELECT state FROM chain WHERE merged_into IS NULL LIMIT 1
"""
FIND_BY_IDENTIFIER = FIND_BY_ID.replace(
    "WHERE id = %s", "WHERE id = (SELECT profile_id FROM identities WHERE type = %s AND value = %s)"
)

# the tables holding a person's rows by ``profile_id``, emptied by ``erase``
PERSONAL_TABLES = (
    "timeline",
    "segment_members",
    "segment_timers",
    "outbox",
    "deliveries",
    "failed_deliveries",
    "decisions",
    "feedback",
)


class PostgresStore(PostgresLeases):
    """``postgresql://...``: the store several processes share."""

    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities(shared_between_processes=True)

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        with self._transaction() as conn:
            tx = PostgresTransaction(conn)
            yield tx
            tx.before_commit()

    def find(self, ref: str | Identifier) -> Profile | None:
        if isinstance(ref, Identifier):
            row = self._fetchone(FIND_BY_IDENTIFIER, ref)
        else:
            row = self._fetchone(FIND_BY_ID, (ref,))
        return decode_profile(row[0]) if row else None

    def identifiers(self, profile_id: str) -> list[Identifier]:
        found = self._fetchall(
            "SELECT type, value FROM identities WHERE profile_id = %s ORDER BY type, value",
            (profile_id,),
        )
        return [Identifier(t, v) for t, v in found]

    def timeline(
        self, profile_id: str, *, before: tuple[int, str, int] | None, limit: int
    ) -> list[TimelineEntry]:
        sql = "SELECT at, message_id, payload, seq FROM timeline WHERE profile_id = %s"
        params: list[Any] = [profile_id]
        if before is not None:
            sql += " AND (at, message_id, seq) < (%s, %s, %s)"
            params.extend(before)
        sql += " ORDER BY at DESC, message_id DESC, seq DESC LIMIT %s"
        found = self._fetchall(sql, [*params, limit])
        return [
            TimelineEntry(from_micros(at), mid, bytes(payload), seq)
            for at, mid, payload, seq in found
        ]

    def journal_of(self, profile_id: str) -> list[JournalEntry]:
        found = self._fetchall(
            f"SELECT {rows.JOURNAL_COLUMNS} FROM merge_journal"
            " WHERE survivor = %s OR other = %s ORDER BY id",
            (profile_id, profile_id),
        )
        return [rows.journal_entry(row) for row in found]

    def erase(self, profile_id: str, suppress: list[str], at: datetime) -> ErasedPerson:
        """Everything of the person in one transaction. Rows are deleted with RETURNING, so
        what is reported is what was deleted, even if a worker committed a moment before."""
        with self._transaction() as conn:
            stubs = sorted(
                r[0]
                for r in conn.execute(
                    "DELETE FROM profiles WHERE id = %s OR merged_into = %s RETURNING id",
                    (profile_id, profile_id),
                )
                if r[0] != profile_id
            )
            ids = [profile_id, *stubs]
            identifiers = sorted(
                Identifier(t, v)
                for t, v in conn.execute(
                    "DELETE FROM identities WHERE profile_id = ANY(%s) RETURNING type, value",
                    (ids,),
                )
            )
            conn.execute(
                "DELETE FROM merge_journal WHERE survivor = ANY(%s) OR other = ANY(%s)",
                (ids, ids),
            )
            for table in PERSONAL_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE profile_id = ANY(%s)", (ids,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO suppressions (hash, at) VALUES (%s, %s)"
                    " ON CONFLICT (hash) DO NOTHING",
                    [(h, at.isoformat()) for h in sorted(set(suppress))],
                )
        return ErasedPerson(ids, identifiers)

    def suppressed(self) -> set[str]:
        return {r[0] for r in self._fetchall("SELECT hash FROM suppressions")}

    # -- segments ---------------------------------------------------------------------------

    def list_segments(self) -> list[StoredSegment]:
        found = self._fetchall(
            "SELECT name, definition, version, backfilled_version FROM segments ORDER BY name"
        )
        return [StoredSegment(n, d.encode(), v, b) for n, d, v, b in found]

    def put_segment(self, segment: StoredSegment, at: datetime) -> None:
        self._write(
            "INSERT INTO segments (name, definition, version, updated_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " definition = excluded.definition, version = excluded.version,"
            " updated_at = excluded.updated_at",
            (segment.name, segment.definition.decode(), segment.version, at.isoformat()),
        )

    def delete_segment(self, name: str) -> bool:
        with self._transaction() as conn:
            deleted = conn.execute("DELETE FROM segments WHERE name = %s", (name,)).rowcount
            conn.execute("DELETE FROM segment_members WHERE segment = %s", (name,))
        return deleted > 0

    def mark_backfilled(self, name: str, version: str) -> None:
        self._write(
            "UPDATE segments SET backfilled_version = %s WHERE name = %s AND version = %s",
            (version, name, version),
        )

    def segment_size(self, name: str) -> int:
        row = self._fetchone("SELECT count(*) FROM segment_members WHERE segment = %s", (name,))
        return int(row[0]) if row else 0

    def segment_members(
        self, name: str, after: str | None, limit: int
    ) -> list[tuple[str, datetime]]:
        found = self._fetchall(
            "SELECT profile_id, entered_at FROM segment_members WHERE segment = %s"
            " AND profile_id > %s ORDER BY profile_id LIMIT %s",
            (name, after or "", limit),
        )
        return [(pid, from_micros(at)) for pid, at in found]

    def memberships(self, profile_id: str) -> dict[str, datetime]:
        found = self._fetchall(
            "SELECT segment, entered_at FROM segment_members WHERE profile_id = %s"
            " ORDER BY segment",
            (profile_id,),
        )
        return {segment: from_micros(at) for segment, at in found}

    def next_timer_at(self) -> datetime | None:
        row = self._fetchone("SELECT min(due_at) FROM segment_timers")
        return from_micros(row[0]) if row and row[0] is not None else None

    def profile_count(self) -> int:
        row = self._fetchone("SELECT count(*) FROM profiles WHERE merged_into IS NULL")
        return int(row[0]) if row else 0

    def profile_ids(self, after: str | None, limit: int) -> list[str]:
        found = self._fetchall(
            "SELECT id FROM profiles WHERE merged_into IS NULL AND id > %s ORDER BY id LIMIT %s",
            (after or "", limit),
        )
        return [r[0] for r in found]

    # -- keys and sources -------------------------------------------------------------------

    def create_key(self, key: ApiKey, secret_hash: str) -> None:
        self._write(
            "INSERT INTO api_keys (id, kind, source, secret_hash, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (key.id, key.kind, key.source, secret_hash, key.created_at.isoformat()),
        )

    def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = self._fetchone(
            f"SELECT {rows.API_KEY_COLUMNS} FROM api_keys WHERE secret_hash = %s", (secret_hash,)
        )
        return rows.api_key(row) if row else None

    def list_keys(self) -> list[ApiKey]:
        found = self._fetchall(f"SELECT {rows.API_KEY_COLUMNS} FROM api_keys ORDER BY created_at")
        return [rows.api_key(row) for row in found]

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        return (
            self._write(
                "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (at.isoformat(), key_id),
            )
            > 0
        )

    def upsert_source(self, source: Source) -> None:
        self._write(
            "INSERT INTO sources (name, allowed_origins) VALUES (%s, %s) ON CONFLICT (name)"
            " DO UPDATE SET allowed_origins = excluded.allowed_origins",
            (source.name, msgspec.json.encode(source.allowed_origins).decode()),
        )

    def get_source(self, name: str) -> Source | None:
        row = self._fetchone("SELECT name, allowed_origins FROM sources WHERE name = %s", (name,))
        return Source(row[0], msgspec.json.decode(row[1])) if row else None

    def list_sources(self) -> list[Source]:
        found = self._fetchall("SELECT name, allowed_origins FROM sources ORDER BY name")
        return [Source(name, msgspec.json.decode(origins)) for name, origins in found]

    def audit(self, at: datetime, actor: str, action: str, target: str, details: Any) -> None:
        self._write(
            "INSERT INTO audit_log (at, actor, action, target, details)"
            " VALUES (%s, %s, %s, %s, %s)",
            (at.isoformat(), actor, action, target, msgspec.json.encode(details).decode()),
        )
