"""API keys: kinds and scopes, revocation, secrets stored hashed.

Uses the real SQLite store on a temporary file (the only unit test module that touches disk).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relevo._clock import ManualClock
from relevo.errors import AuthError, Forbidden, ValidationError
from relevo.keys import DEFAULT_SOURCE, KeyRing, NewKey, hash_secret
from relevo.store.base import Source
from relevo.store.sqlite import SQLiteStore

START = datetime(2026, 11, 24, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'relevo.db'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def ring(store: SQLiteStore) -> KeyRing:
    return KeyRing(store, ManualClock(START))


@pytest.fixture
def keys(ring: KeyRing) -> dict[str, NewKey]:
    return {kind: ring.create(kind) for kind in ("write", "server", "admin")}


def raises_exactly(error: type[Exception]) -> pytest.RaisesExc[Exception]:
    """``Forbidden`` is an ``AuthError``: these tests tell the two apart."""
    return pytest.raises(error, check=lambda exc: type(exc) is error)


class TestCreate:
    def test_each_kind_has_its_prefix_and_unique_secrets(self, ring: KeyRing) -> None:
        made = [ring.create(kind) for kind in ("write", "server", "admin", "write")]
        assert [k.secret[:6] for k in made] == ["rlv_w_", "rlv_s_", "rlv_a_", "rlv_w_"]
        assert len({k.secret for k in made}) == 4
        assert len({k.key.id for k in made}) == 4
        assert all(len(k.secret) >= 6 + 32 for k in made)  # 24 random bytes, url-safe

    def test_a_write_key_belongs_to_a_source_which_is_created(
        self, ring: KeyRing, store: SQLiteStore
    ) -> None:
        default = ring.create("write")
        named = ring.create("write", source="mobile")
        assert default.key.source == DEFAULT_SOURCE
        assert named.key.source == "mobile"
        assert store.get_source("mobile") == Source("mobile", [])

    def test_an_existing_source_is_kept(self, ring: KeyRing, store: SQLiteStore) -> None:
        store.upsert_source(Source("web", ["https://shop.example"]))
        ring.create("write", source="web")
        assert store.get_source("web") == Source("web", ["https://shop.example"])

    @pytest.mark.parametrize("kind", ["server", "admin"])
    def test_only_write_keys_have_a_source(self, ring: KeyRing, kind: str) -> None:
        assert ring.create(kind).key.source is None
        with pytest.raises(ValidationError, match="source"):
            ring.create(kind, source="web")

    def test_unknown_kinds_are_refused(self, ring: KeyRing) -> None:
        with pytest.raises(ValidationError, match="write, server, admin"):
            ring.create("root")

    def test_creation_is_audited_without_the_secret(
        self, ring: KeyRing, store: SQLiteStore
    ) -> None:
        new = ring.create("server", actor="alice")
        conn = sqlite3.connect(store.path)
        try:
            rows = conn.execute("SELECT actor, action, target, details FROM audit_log").fetchall()
        finally:
            conn.close()
        assert [r[:3] for r in rows] == [("alice", "key.create", new.key.id)]
        assert '"server"' in rows[0][3]
        assert new.secret not in rows[0][3]

    def test_created_at_comes_from_the_clock(self, ring: KeyRing) -> None:
        assert ring.create("admin").key.created_at == START


class TestWriteAccess:
    def test_a_write_key_opens_its_source(self, ring: KeyRing, keys: dict[str, NewKey]) -> None:
        access = ring.write_access(keys["write"].secret)
        assert access.key.id == keys["write"].key.id
        assert access.source.name == DEFAULT_SOURCE

    def test_each_write_key_opens_its_own_source(self, ring: KeyRing) -> None:
        web, app = ring.create("write", source="web"), ring.create("write", source="app")
        assert ring.write_access(web.secret).source.name == "web"
        assert ring.write_access(app.secret).source.name == "app"

    @pytest.mark.parametrize("kind", ["server", "admin"])
    def test_server_and_admin_keys_cannot_collect(
        self, ring: KeyRing, keys: dict[str, NewKey], kind: str
    ) -> None:
        with raises_exactly(Forbidden):
            ring.write_access(keys[kind].secret)

    @pytest.mark.parametrize("secret", [None, ""])
    def test_no_key_is_an_auth_error(self, ring: KeyRing, secret: str | None) -> None:
        with raises_exactly(AuthError):
            ring.write_access(secret)

    @pytest.mark.parametrize("secret", ["rlv_w_nope", "WK_segment_py", "x" * 10_000])
    def test_an_unknown_key_is_an_auth_error(
        self, ring: KeyRing, keys: dict[str, NewKey], secret: str
    ) -> None:
        with raises_exactly(AuthError):
            ring.write_access(secret)

    def test_a_key_must_match_exactly(self, ring: KeyRing, keys: dict[str, NewKey]) -> None:
        secret = keys["write"].secret
        for near in (secret[:-1], secret + "x", secret.upper(), f" {secret}"):
            with raises_exactly(AuthError):
                ring.write_access(near)


class TestBearer:
    @pytest.mark.parametrize("kind", ["server", "admin"])
    def test_server_scope_takes_server_and_admin_keys(
        self, ring: KeyRing, keys: dict[str, NewKey], kind: str
    ) -> None:
        key = ring.bearer(keys[kind].secret, allowed=("server", "admin"))
        assert (key.id, key.kind) == (keys[kind].key.id, kind)

    def test_a_write_key_is_forbidden_on_server_routes(
        self, ring: KeyRing, keys: dict[str, NewKey]
    ) -> None:
        with raises_exactly(Forbidden) as info:
            ring.bearer(keys["write"].secret, allowed=("server", "admin"))
        assert "write" in str(info.value)

    def test_admin_scope_takes_only_admin_keys(
        self, ring: KeyRing, keys: dict[str, NewKey]
    ) -> None:
        assert ring.bearer(keys["admin"].secret, allowed=("admin",)).kind == "admin"
        for kind in ("server", "write"):
            with raises_exactly(Forbidden):
                ring.bearer(keys[kind].secret, allowed=("admin",))

    @pytest.mark.parametrize("secret", [None, "", "rlv_s_unknown"])
    def test_missing_or_unknown_is_an_auth_error(
        self, ring: KeyRing, keys: dict[str, NewKey], secret: str | None
    ) -> None:
        with raises_exactly(AuthError):
            ring.bearer(secret, allowed=("server", "admin"))


class TestRevoke:
    @pytest.mark.parametrize("kind", ["write", "server", "admin"])
    def test_a_revoked_key_is_refused_even_if_just_used(
        self, ring: KeyRing, keys: dict[str, NewKey], kind: str
    ) -> None:
        new = keys[kind]
        use = (
            (lambda: ring.write_access(new.secret))
            if kind == "write"
            else (lambda: ring.bearer(new.secret, allowed=("server", "admin")))
        )
        use()  # now in the lookup cache
        assert ring.revoke(new.key.id, actor="alice")
        with raises_exactly(AuthError):
            use()

    def test_revoking_one_key_leaves_the_others(
        self, ring: KeyRing, keys: dict[str, NewKey]
    ) -> None:
        ring.revoke(keys["server"].key.id)
        ring.write_access(keys["write"].secret)
        ring.bearer(keys["admin"].secret, allowed=("admin",))

    def test_revoking_twice_or_unknown_reports_false(
        self, ring: KeyRing, keys: dict[str, NewKey]
    ) -> None:
        assert ring.revoke(keys["server"].key.id)
        assert not ring.revoke(keys["server"].key.id)
        assert not ring.revoke("key_unknown")

    def test_revocation_is_recorded_and_audited(
        self, ring: KeyRing, store: SQLiteStore, keys: dict[str, NewKey]
    ) -> None:
        ring.revoke(keys["admin"].key.id, actor="bob")
        listed = {k.id: k for k in store.list_keys()}
        assert listed[keys["admin"].key.id].revoked_at == START
        assert listed[keys["server"].key.id].revoked_at is None
        conn = sqlite3.connect(store.path)
        try:
            actions = conn.execute("SELECT actor, action, target FROM audit_log").fetchall()
        finally:
            conn.close()
        assert ("bob", "key.revoke", keys["admin"].key.id) in actions


class TestHashedSecrets:
    def test_secrets_are_stored_hashed(
        self, store: SQLiteStore, keys: dict[str, NewKey], tmp_path: Path
    ) -> None:
        store.close()  # checkpoint the WAL into the main file (and read every file anyway)
        files = [p for p in tmp_path.iterdir() if p.is_file()]
        data = b"".join(p.read_bytes() for p in files)
        for new in keys.values():
            assert new.secret.encode() not in data
            # the raw-bytes search looks in the right place: the hash is there
            assert hash_secret(new.secret).encode() in data

    def test_the_hash_is_sha256_hex(self) -> None:
        assert hash_secret("abc") == (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )

    def test_lookups_go_by_hash(self, store: SQLiteStore, keys: dict[str, NewKey]) -> None:
        secret = keys["server"].secret
        assert store.key_by_hash(hash_secret(secret)) is not None
        assert store.key_by_hash(secret) is None
