"""Standard Webhooks signing (S14), checked against the reference verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relevo.channels.signing import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    new_secret,
    sign,
    signature,
)
from relevo.errors import ValidationError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "destinations.md"
BODY = json.dumps({"type": "segment.entered", "profile": "p_1", "segment": "vip"}).encode()


def test_a_valid_delivery_verifies_with_the_reference_verifier() -> None:
    secret = new_secret()
    headers = sign(secret, "msg_2x9a", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_the_headers_are_the_standard_three() -> None:
    headers = sign(new_secret(), "msg_1", 1_700_000_000, BODY)
    assert list(headers) == [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": headers["webhook-signature"],
    }
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert signature(secret, "msg_1", 1_700_000_000, BODY) == (
        "v1," + base64.b64encode(expected).decode()
    )


def test_a_known_vector_from_the_reference_library() -> None:
    # the same inputs through the reference library's own signer
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    when = datetime(2026, 1, 1, tzinfo=UTC)
    ours = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", when, b'{"test": 2432232314}')
    theirs = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", when, '{"test": 2432232314}')
    assert ours == theirs


def test_a_tampered_body_is_rejected_by_the_reference_verifier() -> None:
    secret = new_secret()
    headers = sign(secret, "msg_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"vip", b"vvip"), headers)


def test_a_ten_minute_old_delivery_is_rejected_by_the_reference_verifier() -> None:
    secret = new_secret()
    headers = sign(secret, "msg_1", int(time.time()) - 600, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_a_tampered_id_or_timestamp_is_rejected() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = sign(secret, "msg_1", now, BODY)
    for changed in ({ID_HEADER: "msg_2"}, {TIMESTAMP_HEADER: str(now - 1)}):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY, {**headers, **changed})


def test_another_secret_does_not_verify() -> None:
    headers = sign(new_secret(), "msg_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_rotation_signs_with_every_active_secret() -> None:
    old, new = new_secret(), new_secret()
    headers = sign([old, new], "msg_1", int(time.time()), BODY)
    assert len(headers[SIGNATURE_HEADER].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


@given(
    st.binary(max_size=512),
    st.integers(0, 2**33),
    st.from_regex(r"[A-Za-z0-9_:-]{1,40}", fullmatch=True),
)
def test_signing_is_deterministic_for_an_id_timestamp_and_body(
    body: bytes, timestamp: int, msg_id: str
) -> None:
    # retries re-sign with the stored id; the same inputs must give the same headers
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    assert sign(secret, msg_id, timestamp, body) == sign(secret, msg_id, timestamp, body)


def test_retries_keep_the_id_and_re_sign_the_timestamp() -> None:
    secret = new_secret()
    first = sign(secret, "msg_stable", 1_700_000_000, BODY)
    retry = sign(secret, "msg_stable", 1_700_000_060, BODY)
    assert first[ID_HEADER] == retry[ID_HEADER]
    assert first[SIGNATURE_HEADER] != retry[SIGNATURE_HEADER]


def test_aware_datetimes_are_floored_to_seconds() -> None:
    secret = new_secret()
    when = datetime(2026, 1, 1, 0, 0, 5, 999_999, tzinfo=UTC)
    assert sign(secret, "m", when, BODY) == sign(secret, "m", int(when.timestamp()), BODY)


def test_new_secrets_are_random_and_well_formed() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[6:], validate=True)) == 32
    assert len(base64.b64decode(new_secret(24)[6:])) == 24
    with pytest.raises(ValueError):
        new_secret(8)


@pytest.mark.parametrize(
    ("secret", "msg_id", "timestamp"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1),  # no prefix
        ("whsec_not base64!", "m", 1),
        ("whsec_" + base64.b64encode(b"short").decode(), "m", 1),  # too short a key
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "m", 1),  # too long a key
        (None, "msg.with.dots", 1),  # a dot would make the signed content ambiguous
        (None, "", 1),
        (None, "msg 1", 1),
        (None, "m\r\nx-evil: 1", 1),
        (None, "m", -1),
        (None, "m", datetime(2026, 1, 1)),  # naive
        (None, "m", True),
    ],
)
def test_malformed_inputs_are_refused(secret: str | None, msg_id: str, timestamp: Any) -> None:
    with pytest.raises(ValidationError):
        sign(secret or new_secret(), msg_id, timestamp, BODY)


def test_no_secret_is_refused() -> None:
    with pytest.raises(ValidationError):
        sign([], "m", 1, BODY)


# --- the receiver's snippet in docs/destinations.md --------------------------------------


def _docs_verifier() -> Any:
    text = DOCS.read_text()
    block = re.search(r"<!-- verify-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/destinations.md lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOCS), "exec"), namespace)  # our own docs, in a test
    return namespace["verify"]


def test_the_documented_receiver_snippet_accepts_and_rejects_like_the_reference() -> None:
    verify = _docs_verifier()
    secret = new_secret()
    now = int(time.time())
    headers = sign(secret, "msg_1", now, BODY)
    assert verify(secret, headers, BODY) == json.loads(BODY)
    rotated = sign([new_secret(), secret], "msg_1", now, BODY)
    assert verify(secret, rotated, BODY) == json.loads(BODY)
    for bad_headers, bad_body in (
        (headers, BODY + b" "),
        (sign(secret, "msg_1", now - 600, BODY), BODY),
        (sign(secret, "msg_1", now + 600, BODY), BODY),
        ({**headers, "webhook-signature": "v1,AAAA"}, BODY),
        ({k: v for k, v in headers.items() if k != "webhook-id"}, BODY),
    ):
        with pytest.raises(ValueError):
            verify(secret, bad_headers, bad_body)
