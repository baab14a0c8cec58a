"""Standard Webhooks signatures for outbound deliveries (https://www.standardwebhooks.com/).

Each delivery carries three headers:

- ``webhook-id``: the message id. The SAME id for every retry of one message, so receivers can
  deduplicate (the dispatcher's job: it signs each attempt with the id it stored).
- ``webhook-timestamp``: integer seconds since the epoch, of this attempt. Receivers reject a
  timestamp more than a few minutes away from their clock (replay protection), so each attempt is
  signed afresh.
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, with one
  space-separated entry per active secret while a secret is being rotated.

Secrets look like ``whsec_<base64 of 24 to 64 random bytes>``; the HMAC key is the decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import datetime

from relevo.errors import ValidationError

__all__ = [
    "ID_HEADER",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "new_secret",
    "sign",
    "signature",
]

SECRET_PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
# No "." (the signed content is "{id}.{timestamp}.{body}": a dot in the id would let a signature
# be re-read with a different split) and nothing a header cannot carry.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_\-:]{1,256}")


def new_secret(nbytes: int = 32) -> str:
    """A fresh signing secret, ``whsec_`` followed by ``nbytes`` random bytes in base64."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValidationError("a webhook secret looks like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("a webhook secret looks like whsec_<base64>") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValidationError(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
        )
    return key


def _seconds(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValidationError("a webhook timestamp must be timezone-aware")
        return int(timestamp.timestamp() // 1)
    if isinstance(timestamp, bool) or timestamp < 0:
        raise ValidationError("a webhook timestamp is a non-negative number of seconds")
    return int(timestamp)


def signature(secret: str, msg_id: str, timestamp: int | datetime, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` for ``msg_id`` at ``timestamp``.

    Raises:
        ValidationError: a malformed secret, message id or timestamp.
    """
    if not _MESSAGE_ID.fullmatch(msg_id):
        raise ValidationError(
            "a webhook message id is 1 to 256 characters of A-Z, a-z, 0-9, '_', '-' or ':'"
        )
    signed = f"{msg_id}.{_seconds(timestamp)}.".encode("ascii") + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign(
    secret: str | Sequence[str], msg_id: str, timestamp: int | datetime, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    Deterministic: the same secret, id, timestamp and body give the same headers.

    Args:
        secret: the destination's secret, or several while rotating (each signs; a receiver
            accepts any one it knows).
        msg_id: the message id, stable across retries of the same message.
        timestamp: when this attempt is sent (seconds since the epoch, or an aware datetime).
        body: the exact bytes sent as the request body.

    Returns:
        ``{"webhook-id": ..., "webhook-timestamp": ..., "webhook-signature": ...}``

    Raises:
        ValidationError: a malformed secret, message id or timestamp, or no secret at all.
    """
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValidationError("at least one webhook secret is needed to sign")
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(_seconds(timestamp)),
        SIGNATURE_HEADER: " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }
