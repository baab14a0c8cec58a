"""Connections of the PostgreSQL store, shared by its parts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from relevo.store import postgres_db
from relevo.store.postgres_db import Connection

DEFAULT_MIN_CONNECTIONS = 1
DEFAULT_MAX_CONNECTIONS = 8


class PostgresBase:
    """A pool of connections: reads and single writes in autocommit, units of work in
    READ COMMITTED transactions. Driver errors leave as Relevo's (``postgres_db.translated``)."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = DEFAULT_MIN_CONNECTIONS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.url = url
        self._pool = postgres_db.open_pool(url, min_size=min_connections, max_size=max_connections)

    def migrate(self) -> None:
        with self._connection() as conn:
            postgres_db.migrate(conn)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection in autocommit mode."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise postgres_db.translated(exc, in_transaction=False) from exc

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A pooled connection inside a transaction (committed unless it raises). A conflict
        with a concurrent transaction leaves as ``TransactionConflict``."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise postgres_db.translated(exc, in_transaction=True) from exc

    def _fetchall(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _fetchone(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchone()

    def _write(self, sql: str, params: Any = None) -> int:
        """One statement, committed on its own; returns the rows it changed."""
        with self._connection() as conn:
            return conn.execute(sql, params).rowcount

    def close(self) -> None:
        self._pool.close()
