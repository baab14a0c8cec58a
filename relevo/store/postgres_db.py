"""PostgreSQL plumbing of the shared state store: the pool, error translation, migrations and
bulk inserts."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import IsolationLevel, errors as pg_errors
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from relevo.errors import BackendError, Conflict, RelevoError
from relevo.store import schema
from relevo.store.base import TransactionConflict

Connection = psycopg.Connection[TupleRow]
Pool = ConnectionPool[Connection]

CONNECT_TIMEOUT_SECONDS = 10
COPY_FROM_ROWS = 64  # from this many rows an insert goes through COPY, below it executemany

# errors a concurrent transaction causes: nothing of this one commits, and a retry is safe
RETRYABLE: tuple[type[psycopg.Error], ...] = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.UniqueViolation,
    pg_errors.LockNotAvailable,
)

# one lock per schema, so two processes starting together do not both migrate
MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "'relevo.migrate:' || coalesce(current_schema(), ''), 0))"
)


def translated(exc: psycopg.Error, *, in_transaction: bool) -> RelevoError:
    """The error of Relevo's tree that a driver error means."""
    if in_transaction and isinstance(exc, RETRYABLE):
        return TransactionConflict(f"a concurrent transaction got there first: {exc}")
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict(f"it exists already: {exc}")
    return BackendError(f"PostgreSQL store: {exc}")


def open_pool(url: str, *, min_size: int, max_size: int) -> Pool:
    """A pool of autocommit connections (``conn.transaction()`` makes a transaction of them,
    READ COMMITTED). The server is probed first, so a wrong URL fails at once and clearly."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as probe:
            check_durability(probe)
    except psycopg.Error as exc:
        raise translated(exc, in_transaction=False) from exc

    def configure(conn: Connection) -> None:
        conn.isolation_level = IsolationLevel.READ_COMMITTED

    pool: Pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
        configure=configure,
        open=False,
        name="relevo-store",
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        pool.close()
        raise translated(exc, in_transaction=False) from exc
    return pool


def check_durability(conn: Connection) -> None:
    """A commit must be on disk before Relevo acts on it (test plan R18)."""
    row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
    if row is not None and row[0] == "off":
        raise BackendError(
            "the PostgreSQL store needs synchronous_commit on (it is off for this connection):"
            " a crash would forget transactions Relevo already acted on"
        )


def migrate(conn: Connection) -> int:
    """Apply the numbered scripts of ``migrations/postgres`` not yet applied, in one transaction
    under an advisory lock; ``schema_migrations`` records each. Returns the schema version."""
    with conn.transaction():
        conn.execute(MIGRATION_LOCK)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        for number, script in schema.scripts("postgres"):
            if number <= current:
                continue
            conn.execute(script.read_text(), prepare=False)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
            current = number
    return current


def insert_rows(
    conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """Insert many rows: COPY for a large batch, one pipelined executemany for a small one."""
    if not rows:
        return
    names = ", ".join(columns)
    with conn.cursor() as cur:
        if len(rows) >= COPY_FROM_ROWS:
            with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
