"""The embedded SQLite store passes the store conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from relevo.cli import cli
from relevo.store.base import Store
from relevo.store.registry import open_store
from relevo.store.schema import latest
from relevo.store.sqlite import SQLiteStore
from relevo.testing.store_conformance import StoreConformance, StoreFactory


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Iterator[StoreFactory]:
        opened: list[Store] = []

        def open_one() -> Store:
            store = SQLiteStore(f"sqlite:///{tmp_path / 'relevo.db'}")
            opened.append(store)
            return store

        yield open_one
        for store in opened:
            store.close()


def test_the_registry_opens_sqlite_urls(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'relevo.db'}")
    try:
        assert isinstance(store, SQLiteStore)
        assert not store.capabilities.shared_between_processes
    finally:
        store.close()


def test_db_migrate_prints_the_schema_version(tmp_path: Path, no_ambient_config: None) -> None:
    url = f"sqlite:///{tmp_path / 'relevo.db'}"
    for _ in range(2):  # idempotent
        result = CliRunner().invoke(cli, ["db", "migrate", "--store-url", url])
        assert result.exit_code == 0, result.output
        assert result.output == f"sqlite store at schema version {latest('sqlite')}\n"
