"""Store backends by URL scheme, imported only when chosen."""

from __future__ import annotations

from relevo.errors import ValidationError
from relevo.store.base import ProfileStore
from relevo.store.sqlite import SQLiteStore


def open_store(url: str) -> SQLiteStore:
    """The store a URL names. Every backend is also a ``KeyStore``."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        return SQLiteStore(url)
    raise ValidationError(f"unknown store URL scheme {scheme!r} (supported: sqlite)")


__all__ = ["ProfileStore", "open_store"]
