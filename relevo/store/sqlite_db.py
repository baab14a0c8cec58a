"""SQLite plumbing shared by the embedded store and the embedded event log."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path


def connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode; transactions are explicit (``BEGIN`` ... ``COMMIT``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


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
