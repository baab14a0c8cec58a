"""The PostgreSQL store passes the store conformance suite (each test in a schema of its own)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from relevo.cli import cli
from relevo.errors import BackendError, BackendNotInstalled, ValidationError
from relevo.store.base import Store
from relevo.store.registry import open_store
from relevo.store.schema import latest
from relevo.testing.store_conformance import StoreConformance, StoreFactory


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, postgres_url: str) -> Iterator[StoreFactory]:
        opened: list[Store] = []

        def open_one() -> Store:
            store = open_store(postgres_url)
            opened.append(store)
            return store

        yield open_one
        for store in opened:
            store.close()


def test_both_schemes_open_the_shared_store(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        try:
            assert store.capabilities.shared_between_processes
            store.migrate()
        finally:
            store.close()


def test_a_store_without_durable_commits_is_refused(postgres_url: str) -> None:
    with pytest.raises(BackendError, match="synchronous_commit"):
        open_store(postgres_url + "&options=-csynchronous_commit%3Doff")


def test_an_unreachable_server_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="PostgreSQL store"):
        open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith("relevo.store.postgres"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(BackendNotInstalled, match=r"pip install 'relevo\[postgres\]'"):
        open_store("postgresql://127.0.0.1/test")


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValidationError, match="postgresql"):
        open_store("mysql://127.0.0.1/test")


def test_db_migrate_prints_the_schema_version(postgres_url: str, no_ambient_config: None) -> None:
    for _ in range(2):  # idempotent
        result = CliRunner().invoke(cli, ["db", "migrate", "--store-url", postgres_url])
        assert result.exit_code == 0, result.output
        assert result.output == f"postgresql store at schema version {latest('postgres')}\n"
