"""SQLite plumbing shared by the embedded store and the embedded event log."""

from __future__ import annotations

import logging
import sqlite3
import threading
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

# A checkpoint copies the WAL back into the database file and fsyncs it. Left to SQLite, it
# runs inside whichever commit crosses the threshold, stalling the writer for milliseconds;
# here a background thread checkpoints instead, and the inline one is only a safety net.
CHECKPOINT_EVERY_SECONDS = 0.25
RESTART_AFTER_FRAMES = 4096  # 16 MiB of 4 KiB pages
INLINE_CHECKPOINT_PAGES = 50_000


def connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode; transactions are explicit (``BEGIN`` ... ``COMMIT``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: indexes of a busy store stay in memory
    conn.execute(f"PRAGMA wal_autocheckpoint={INLINE_CHECKPOINT_PAGES}")
    return conn


class ThreadConnections:
    """One reading connection per thread (sqlite3 connections must not be shared), all closed
    together."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, synchronous="NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class Checkpointer:
    """Checkpoints a WAL database from its own thread and connection (PASSIVE: never blocks
    the writer or readers)."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._conn = connect(path, synchronous=synchronous)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"relevo-checkpoint-{path.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CHECKPOINT_EVERY_SECONDS):
            try:
                _, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames > RESTART_AFTER_FRAMES:
                    # under a steady writer a passive checkpoint never lets the WAL start over:
                    # now that most of it is copied, briefly hold writers so the next one can
                    self._conn.execute("PRAGMA wal_checkpoint(RESTART)")
            except sqlite3.Error:  # thread boundary: a busy or closing database is retried
                log.debug("checkpoint skipped", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._conn.close()


def migrate(conn: sqlite3.Connection, folder: str) -> int:
    """Apply the numbered ``NNNN_name.sql`` files under ``relevo/store/migrations/<folder>``.

    ``PRAGMA user_version`` records the last one applied.
    """
    current: int = conn.execute("PRAGMA user_version").fetchone()[0]
    scripts = sorted(
        (int(item.name.split("_", 1)[0]), item)
        for item in (resources.files("relevo.store") / "migrations" / folder).iterdir()
        if item.name.endswith(".sql")
    )
    for number, script in scripts:
        if number <= current:
            continue
        conn.executescript(f"BEGIN;\n{script.read_text()}\nPRAGMA user_version={number};\nCOMMIT;")
        current = number
    return current


def sqlite_path(url: str) -> Path:
    """``sqlite:///./relevo.db`` -> ./relevo.db; ``sqlite:////abs/path.db`` -> /abs/path.db."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len(prefix) :])
