"""The numbered migration scripts of a backend: ``relevo/store/migrations/<folder>/NNNN_*.sql``."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def scripts(folder: str) -> list[tuple[int, Traversable]]:
    """The scripts in the order they apply, each with its number (the schema version it makes)."""
    return sorted(
        (
            (int(item.name.split("_", 1)[0]), item)
            for item in (resources.files("relevo.store") / "migrations" / folder).iterdir()
            if item.name.endswith(".sql")
        ),
        key=lambda numbered: numbered[0],
    )


def latest(folder: str) -> int:
    """The schema version a fully migrated store of this backend is at."""
    return max((number for number, _ in scripts(folder)), default=0)
