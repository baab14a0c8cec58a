"""API keys: write keys (collect only), server keys (profiles, decisions), admin keys (all).

Secrets are shown once and stored as SHA-256 hashes (they are 160-bit random, so a fast hash is
enough). Lookups go through a short-lived cache so a hot path does not hit the store per request.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

from relevo._clock import Clock
from relevo.errors import AuthError, Forbidden, ValidationError
from relevo.store.base import ApiKey, KeyStore, Source

KeyKind = Literal["write", "server", "admin"]
KINDS: tuple[KeyKind, ...] = ("write", "server", "admin")
_PREFIX: dict[str, str] = {"write": "rlv_w_", "server": "rlv_s_", "admin": "rlv_a_"}
DEFAULT_SOURCE = "default"
CACHE_SECONDS = 5.0


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str


@dataclass(frozen=True)
class WriteAccess:
    key: ApiKey
    source: Source


class KeyRing:
    def __init__(self, store: KeyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None, Source | None]] = {}
        self._lock = threading.Lock()

    def create(self, kind: str, source: str | None = None, actor: str = "cli") -> NewKey:
        if kind not in KINDS:
            raise ValidationError(f"key kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if kind == "write":
            source = source or DEFAULT_SOURCE
            if self._store.get_source(source) is None:
                self._store.upsert_source(Source(source, []))
        elif source is not None:
            raise ValidationError("only write keys belong to a source")
        secret = _PREFIX[kind] + secrets.token_urlsafe(24)
        key = ApiKey(
            id=f"key_{secrets.token_hex(6)}",
            kind=kind,
            source=source,
            created_at=self._clock.now(),
            revoked_at=None,
        )
        self._store.create_key(key, hash_secret(secret))
        self._store.audit(
            key.created_at, actor, "key.create", key.id, {"kind": kind, "source": source}
        )
        return NewKey(key, secret)

    def revoke(self, key_id: str, actor: str = "cli") -> bool:
        revoked = self._store.revoke_key(key_id, self._clock.now())
        if revoked:
            self._store.audit(self._clock.now(), actor, "key.revoke", key_id, {})
            with self._lock:
                self._cache.clear()
        return revoked

    def forget_cached(self) -> None:
        """Drop cached keys and sources: call after changing either, so it applies at once."""
        with self._lock:
            self._cache.clear()

    def _lookup(self, secret: str) -> tuple[ApiKey | None, Source | None]:
        digest = hash_secret(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1], hit[2]
        key = self._store.key_by_hash(digest)
        if key is not None and key.revoked_at is not None:
            key = None
        source = self._store.get_source(key.source) if key and key.source else None
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (now, key, source)
        return key, source

    def write_access(self, secret: str | None) -> WriteAccess:
        """The source a write key sends to. Raises AuthError / Forbidden."""
        if not secret:
            raise AuthError("no write key: send it as the HTTP Basic user name, or as writeKey")
        key, source = self._lookup(secret)
        if key is None:
            raise AuthError("unknown or revoked write key")
        if key.kind != "write" or source is None:
            raise Forbidden("collection takes a write key, not a server or admin key")
        return WriteAccess(key, source)

    def bearer(self, secret: str | None, *, allowed: tuple[KeyKind, ...]) -> ApiKey:
        """The server/admin key of a request. Raises AuthError / Forbidden."""
        if not secret:
            raise AuthError("send a key as 'Authorization: Bearer <key>'")
        key, _ = self._lookup(secret)
        if key is None:
            raise AuthError("unknown or revoked key")
        if key.kind not in allowed:
            raise Forbidden(f"this needs a {' or '.join(allowed)} key, not a {key.kind} key")
        return key
