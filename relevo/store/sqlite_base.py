"""Connections of the embedded SQLite store, shared by its parts."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from relevo.store import sqlite_db


class SQLiteBase:
    """Connections of a SQLite store: one writer behind a lock, a reader per thread."""

    def __init__(self, url: str) -> None:
        self.path = sqlite_db.sqlite_path(url)
        # state can be rebuilt from the event log, and offsets commit with it, so NORMAL is
        # safe here: a power loss rolls both back together and the log replays the rest
        self._writer = sqlite_db.connect(self.path, synchronous="NORMAL")
        self._checkpointer = sqlite_db.Checkpointer(self.path, synchronous="NORMAL")
        self._write_lock = threading.Lock()
        self._readers = sqlite_db.ThreadConnections(self.path)

    def migrate(self) -> None:
        with self._write_lock:
            sqlite_db.migrate(self._writer, "sqlite")

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside a write transaction (committed unless it raises)."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        return self._readers.get()

    def _write(self, sql: str, params: Any) -> int:
        with self._write_lock:
            return self._writer.execute(sql, params).rowcount

    def close(self) -> None:
        self._checkpointer.close()
        self._readers.close()
        self._writer.close()
