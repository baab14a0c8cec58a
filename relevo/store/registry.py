"""Store backends by URL scheme, imported only when chosen."""

from __future__ import annotations

from relevo.errors import BackendNotInstalled, ValidationError
from relevo.store.base import ProfileStore, Store

POSTGRES_SCHEMES = ("postgresql", "postgres")
SCHEMES = ("sqlite", *POSTGRES_SCHEMES)
DRIVERS = {"psycopg", "psycopg_pool"}  # what the ``postgres`` extra installs


def _scheme(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme not in SCHEMES:
        raise ValidationError(
            f"unknown store URL scheme {scheme!r} (supported: {', '.join(SCHEMES)})"
        )
    return scheme


def open_store(url: str) -> Store:
    """The store a URL names: ``sqlite:///path.db`` or ``postgresql://...`` (libpq's URL).

    Every backend implements every port (``Store``)."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        from relevo.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    try:
        from relevo.store.postgres import PostgresStore
    except ImportError as exc:
        if exc.name not in DRIVERS:
            raise
        raise BackendNotInstalled(scheme, "postgres") from exc
    return PostgresStore(url)


def migrations_folder(url: str) -> str:
    """The folder of ``relevo/store/migrations`` whose scripts make the URL's schema."""
    return "postgres" if _scheme(url) in POSTGRES_SCHEMES else "sqlite"


__all__ = ["ProfileStore", "Store", "migrations_folder", "open_store"]
