"""Verified identities for decisions asked from a browser.

A browser's ``userId`` is a claim: anyone can type one. A write-key caller (a browser) must
prove it with ``userHash``, the HMAC-SHA256 of the user id under the server's identity secret
(computed by the shop's back end and put into the page), or with a signed profile token that
also expires. An ``anonymousId`` needs no proof: it is the browser's own random cookie, and a
write-key caller only ever receives offer content, never profile data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

import msgspec

from relevo.errors import AuthError

TOKEN_VERSION = "v1"


class _Claims(msgspec.Struct):
    sub: str  # the user id
    exp: int  # unix seconds


def user_hash(secret: str, user_id: str) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(secret: str, user_id: str, claimed: str) -> bool:
    return hmac.compare_digest(user_hash(secret, user_id), claimed)


def sign_token(secret: str, user_id: str, expires: datetime) -> str:
    claims = _b64(msgspec.json.encode(_Claims(user_id, int(expires.timestamp()))))
    return f"{TOKEN_VERSION}.{claims}.{_b64(_mac(secret, claims))}"


def verify_token(secret: str, token: str, now: datetime) -> str:
    """The user id of a valid, unexpired token. Raises AuthError."""
    version, _, rest = token.partition(".")
    claims, _, signature = rest.partition(".")
    if version != TOKEN_VERSION or not claims or not signature:
        raise AuthError("malformed profile token")
    try:
        valid = hmac.compare_digest(_unb64(signature), _mac(secret, claims))
        decoded = msgspec.json.decode(_unb64(claims), type=_Claims) if valid else None
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AuthError("malformed profile token") from exc
    if decoded is None:
        raise AuthError("profile token signature does not match")
    if decoded.exp <= now.timestamp():
        raise AuthError("profile token has expired")
    return decoded.sub


def _mac(secret: str, claims: str) -> bytes:
    return hmac.new(secret.encode(), claims.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
