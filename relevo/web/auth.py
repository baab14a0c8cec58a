"""Credentials from requests: HTTP Basic (write keys) and Bearer (server and admin keys)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request

from relevo.keys import KeyKind, KeyRing
from relevo.store.base import ApiKey


def basic_user(request: Request) -> str | None:
    """The user name of HTTP Basic auth (Segment's SDKs send the write key there)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def require(request: Request, *kinds: KeyKind) -> ApiKey:
    ring: KeyRing = request.app.state.services.keys
    return ring.bearer(bearer_token(request), allowed=kinds)


def audit(request: Request, actor: ApiKey, action: str, target: str, details: Any) -> None:
    """Record an admin change (who, what, on which thing, with what)."""
    services = request.app.state.services
    services.store.audit(services.clock.now(), actor.id, action, target, details)
