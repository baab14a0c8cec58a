"""The HTTP surface in process: collection (Segment/RudderStack compatible), profile API scopes,
operations endpoints and the OpenAPI document.

Every bad input must get its own 4xx with ``{"error": {"code", "message", "details"}}`` saying
what is wrong; never a 5xx (the ASGI transport re-raises any unhandled server error).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from relevo._clock import ManualClock
from relevo.config import Settings
from relevo.services import Services, build_services
from relevo.web.app import create_app
from relevo.web.collect import BATCH_PATHS, SINGLE

SINGLE_PATHS = [f"/v1/{name}" for name in SINGLE]
COLLECT_PATHS = SINGLE_PATHS + list(BATCH_PATHS)


# -- helpers ------------------------------------------------------------------------------------


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def error_of(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """The structured error of a response, after checking its status and shape."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert set(detail) == {"location", "message", "code"}, detail
    return dict(error)


def says(error: dict[str, Any], *words: str) -> None:
    """The error's message or details mention every word (case-insensitive)."""
    text = " ".join(
        [error["message"]]
        + [f"{d['location']} {d['message']} {d['code']}" for d in error["details"]]
    ).lower()
    missing = [w for w in words if w.lower() not in text]
    assert not missing, f"{missing} not mentioned in {error}"


def track(user: str, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "track", "userId": user, "event": "Clicked", **extra}
    if message_id is not None:
        event["messageId"] = message_id
    return event


def nested_object(depth: int) -> str:
    """JSON text of ``depth`` nested objects: {"a":{"a":...1...}}."""
    return '{"a":' * depth + "1" + "}" * depth


def deep_event_text(depth: int) -> str:
    # arrays under one key: 2 bytes a level, so depth 100000 still fits a 500 KB request
    return '{"type":"track","userId":"u","event":"e","properties":{"a":' + (
        "[" * depth + "]" * depth + "}}"
    )


async def profile(client: httpx.AsyncClient, server_key: str, ref: str) -> dict[str, Any]:
    response = await client.get(f"/v1/profiles/{ref}", headers=bearer(server_key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def timeline(
    client: httpx.AsyncClient, server_key: str, ref: str, limit: int = 200
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/profiles/{ref}/events", params={"limit": limit}, headers=bearer(server_key)
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


@pytest.fixture
def processed(services: Services, eventually: Callable[..., Any]) -> Callable[[], Any]:
    """Wait until the processor has applied everything in the log."""

    async def wait() -> None:
        await eventually(services.processor.caught_up, what="the processor to catch up")

    return wait


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client over an app with other settings, and a write key for it."""
    services = build_services(settings, ManualClock())
    try:
        write = services.keys.create("write").secret
        app = create_app(services=services)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as client,
        ):
            yield client, write
    finally:
        services.close()


# -- bad input: each gets its 4xx and says what is wrong -------------------------------------

BIG = "x" * 33_000
OVERSIZED_BATCH = json.dumps(
    {"batch": [track(f"u{i}", properties={"b": "y" * 30_000}) for i in range(20)]}
)
TOO_MANY = json.dumps({"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501})
GZIP_BOMB = gzip.compress(b'{"batch": [' + b" " * 20_000_000 + b"]}")
TRUNCATED_GZIP = gzip.compress(json.dumps(track("u")).encode())[:-10]


def bad(
    case: str, path: str, body: bytes | str, status: int, code: str, *words: str, **headers: str
) -> Any:
    """One bad input: what is sent, the answer it must get, the words its error must say."""
    data = body.encode() if isinstance(body, str) else body
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return pytest.param(path, data, headers, status, code, list(words), id=case)


BAD = "invalid_request"
TOO_LARGE = "payload_too_large"
DEEP_40 = '{"userId": "u", "event": "e", "properties": ' + nested_object(40) + "}"
DEEP_40_BATCH = (
    '{"batch": [{"type": "track", "userId": "u", "event": "e", "context": '
    + nested_object(40)
    + "}]}"
)
DEEP_100000_BATCH = '{"batch": [' + deep_event_text(100_000) + "]}"
ONE_TRACK = json.dumps(track("u"))

# fmt: off
BAD_INPUTS = [
    bad("invalid-json", "/v1/track", '{"userId": "u", ', 400, BAD, "json"),
    bad("invalid-json-batch", "/v1/batch", '{"batch": [', 400, BAD, "json"),
    bad("empty-body", "/v1/track", b"", 400, BAD, "json"),
    bad("invalid-utf8", "/v1/track", b'{"userId": "\xff\xfe", "event": "e"}', 400, BAD, "utf-8"),
    bad("invalid-utf8-batch", "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "\xff", "event": "e"}]}', 400, BAD, "batch[0]"),
    bad("userId-true", "/v1/track", '{"userId": true, "event": "e"}', 400, BAD, "userId", "bool"),
    bad("userId-true-batch", "/v1/batch",
        '{"batch": [{"type": "track", "userId": true, "event": "e"}]}', 400, BAD,
        "batch[0].userId", "bool"),
    bad("properties-list", "/v1/track", '{"userId": "u", "event": "e", "properties": [1, 2]}',
        400, BAD, "properties", "array"),
    bad("traits-string", "/v1/identify", '{"userId": "u", "traits": "pro"}', 400, BAD,
        "traits", "str"),
    bad("no-ids", "/v1/track", '{"event": "e"}', 400, BAD, "userId", "anonymousId"),
    bad("null-and-empty-ids", "/v1/track", '{"userId": null, "anonymousId": "", "event": "e"}',
        400, BAD, "userId", "anonymousId"),
    bad("track-without-event", "/v1/track", '{"userId": "u"}', 400, BAD, "event", "required"),
    bad("type-mismatch", "/v1/track", '{"type": "identify", "userId": "u"}', 400, BAD,
        "type", "identify", "track"),
    bad("unknown-type", "/v1/batch", '{"batch": [{"type": "purchase", "userId": "u"}]}', 400,
        BAD, "batch[0].type", "purchase"),
    bad("batch-event-without-type", "/v1/batch", '{"batch": [{"userId": "u", "event": "e"}]}',
        400, BAD, "batch[0].type", "required"),
    bad("alias-without-previousId", "/v1/alias", '{"userId": "u"}', 400, BAD, "previousId"),
    bad("group-without-groupId", "/v1/group", '{"userId": "u"}', 400, BAD, "groupId"),
    bad("userId-too-long", "/v1/track", json.dumps(track("u" * 1025)), 400, BAD,
        "userId", "1024"),
    bad("bad-timestamp", "/v1/track", '{"userId": "u", "event": "e", "timestamp": "yesterday"}',
        400, BAD, "timestamp", "yesterday"),
    bad("bad-sentAt", "/v1/batch",
        '{"batch": [{"type": "track", "userId": "u", "event": "e"}], "sentAt": "soon"}', 400,
        BAD, "sentAt"),
    bad("NaN", "/v1/track", '{"userId": "u", "event": "e", "properties": {"x": NaN}}', 400,
        BAD, "json"),
    bad("Infinity", "/v1/track", '{"userId": "u", "event": "e", "properties": {"x": Infinity}}',
        400, BAD, "json"),
    bad("-Infinity", "/v1/track",
        '{"userId": "u", "event": "e", "properties": {"x": -Infinity}}', 400, BAD, "json"),
    bad("1e999", "/v1/track", '{"userId": "u", "event": "e", "properties": {"x": 1e999}}', 400,
        BAD, "properties", "range"),
    bad("depth-40", "/v1/track", DEEP_40, 400, BAD, "properties", "32", "too_deep"),
    bad("depth-40-batch", "/v1/batch", DEEP_40_BATCH, 400, BAD, "batch[0].context", "too_deep"),
    bad("depth-100000-batch", "/v1/batch", DEEP_100000_BATCH, 400, BAD, "depth"),
    bad("depth-100000-single", "/v1/track", deep_event_text(100_000), 413, TOO_LARGE, "32768"),
    bad("event-over-32KB", "/v1/track", json.dumps(track("u", properties={"blob": BIG})), 413,
        TOO_LARGE, "32768"),
    bad("request-over-500KB", "/v1/batch", OVERSIZED_BATCH, 413, TOO_LARGE, "512000"),
    bad("batch-over-2500", "/v1/batch", TOO_MANY, 413, TOO_LARGE, "2501", "2500"),
    bad("batch-is-a-list", "/v1/batch", "[]", 400, BAD, "object"),
    bad("batch-missing", "/v1/batch", "{}", 400, BAD, "batch"),
    bad("batch-not-a-list", "/v1/batch", '{"batch": {}}', 400, BAD, "batch", "array"),
    bad("batch-empty", "/v1/batch", '{"batch": []}', 400, BAD, "empty"),
    bad("gzip-bomb", "/v1/batch", GZIP_BOMB, 413, TOO_LARGE, "inflates", Content_Encoding="gzip"),
    bad("corrupt-gzip", "/v1/batch", b"\x1f\x8b\x08\x00 this is not deflate data", 400, BAD,
        "gzip", Content_Encoding="gzip"),
    bad("plain-body-said-gzip", "/v1/track", ONE_TRACK, 400, BAD, "gzip",
        Content_Encoding="gzip"),
    bad("truncated-gzip", "/v1/track", TRUNCATED_GZIP, 400, BAD, "truncated",
        Content_Encoding="gzip"),
]
# fmt: on


@pytest.mark.parametrize(("path", "body", "headers", "status", "code", "words"), BAD_INPUTS)
async def test_bad_input_gets_its_4xx_and_says_what_is_wrong(
    app_client: httpx.AsyncClient,
    keys: Any,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    words: list[str],
) -> None:
    response = await app_client.post(
        path,
        content=body,
        headers={**basic(keys.write), "Content-Type": "application/json", **headers},
    )
    error = error_of(response, status)
    assert error["code"] == code
    says(error, *words)


async def test_bad_event_fields_are_named_in_details(
    app_client: httpx.AsyncClient, keys: Any
) -> None:
    response = await app_client.post(
        "/v1/track", json={"event": "e", "properties": [1]}, headers=basic(keys.write)
    )
    error = error_of(response, 400)
    assert error["details"] == [
        {
            "location": "$.properties",
            "message": "Expected `object | null`, got `array` - at `$.properties`",
            "code": "invalid_type",
        }
    ]
    response = await app_client.post("/v1/track", json={"event": "e"}, headers=basic(keys.write))
    error = error_of(response, 400)
    assert [(d["location"], d["code"]) for d in error["details"]] == [("userId", "missing")]


async def test_nesting_at_the_limit_is_accepted(app_client: httpx.AsyncClient, keys: Any) -> None:
    body = '{"userId": "u", "event": "e", "properties": ' + nested_object(32) + "}"
    response = await app_client.post("/v1/track", content=body, headers=basic(keys.write))
    assert response.status_code == 200, response.text


async def test_recursion_bomb_is_refused_when_size_limits_allow_it(
    make_settings: Callable[..., Settings],
) -> None:
    """With limits raised so the parser meets depth 100000 itself: still a 400, no crash."""
    settings = make_settings(max_event_bytes=2_000_000, max_request_bytes=2_000_000)
    async with serve(settings) as (client, write):
        body = deep_event_text(100_000).replace('"type":"track",', "")
        response = await client.post("/v1/track", content=body, headers=basic(write))
        error = error_of(response, 400)
        says(error, "deep")
        response = await client.post(
            "/v1/batch",
            content='{"batch": [' + deep_event_text(100_000) + "]}",
            headers=basic(write),
        )
        error_of(response, 400)
        # and the app still works
        response = await client.post("/v1/track", json=track("u"), headers=basic(write))
        assert response.status_code == 200


async def test_request_over_limit_streamed_without_content_length(
    app_client: httpx.AsyncClient, keys: Any
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"batch": ['
        for _ in range(20_000):
            yield b'{"type": "track", "userId": "u", "event": "e"},'

    response = await app_client.post("/v1/batch", content=chunks(), headers=basic(keys.write))
    assert "content-length" not in response.request.headers
    error = error_of(response, 413)
    assert error["code"] == "payload_too_large"
    says(error, "512000")


async def test_declared_content_length_over_limit_is_refused_before_reading(
    app_client: httpx.AsyncClient, keys: Any, services: Services
) -> None:
    body = json.dumps({"batch": [track("liar")]}).encode()
    response = await app_client.post(
        "/v1/batch", content=body, headers={**basic(keys.write), "Content-Length": "600000"}
    )
    error = error_of(response, 413)
    says(error, "600000", "512000")
    assert services.log.end_offsets() == dict.fromkeys(range(services.log.partitions), 0)


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "gzip, br"])
async def test_unsupported_content_encoding(
    app_client: httpx.AsyncClient, keys: Any, encoding: str
) -> None:
    response = await app_client.post(
        "/v1/track",
        content=json.dumps(track("u")),
        headers={**basic(keys.write), "Content-Encoding": encoding},
    )
    error = error_of(response, (400, 415))
    says(error, encoding, "gzip")


# -- keys -------------------------------------------------------------------------------------


async def test_missing_key_is_401(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/v1/track", json=track("u"))
    error = error_of(response, 401)
    assert error["code"] == "unauthorized"
    says(error, "write key")
    assert response.headers["www-authenticate"].lower().startswith("basic")


@pytest.mark.parametrize("where", ["basic", "body", "query", "batch-body"])
async def test_unknown_key_is_401(app_client: httpx.AsyncClient, where: str) -> None:
    unknown = "rlv_w_not-a-key"
    path, body, headers, params = "/v1/track", track("u"), {}, {}
    if where == "basic":
        headers = basic(unknown)
    elif where == "body":
        body = {**body, "writeKey": unknown}
    elif where == "query":
        params = {"writeKey": unknown}
    else:
        path, body = "/v1/batch", {"batch": [body], "writeKey": unknown}
    response = await app_client.post(path, json=body, headers=headers, params=params)
    error = error_of(response, 401)
    says(error, "unknown")


@pytest.mark.parametrize("kind", ["server", "admin"])
async def test_server_or_admin_key_cannot_collect(
    app_client: httpx.AsyncClient, keys: Any, kind: str
) -> None:
    secret = getattr(keys, kind)
    response = await app_client.post("/v1/track", json=track("u"), headers=basic(secret))
    error = error_of(response, 403)
    assert error["code"] == "forbidden"
    says(error, "write key")


async def test_revoked_write_key_is_refused_at_once(
    app_client: httpx.AsyncClient, keys: Any, services: Services
) -> None:
    new = services.keys.create("write")
    response = await app_client.post("/v1/track", json=track("u"), headers=basic(new.secret))
    assert response.status_code == 200  # and now it is in the key cache
    response = await app_client.delete(f"/v1/admin/keys/{new.key.id}", headers=bearer(keys.admin))
    assert response.status_code == 200, response.text
    response = await app_client.post("/v1/track", json=track("u"), headers=basic(new.secret))
    error_of(response, 401)


async def test_source_allowed_origins_refuse_other_origins(
    app_client: httpx.AsyncClient, keys: Any
) -> None:
    shop = "https://shop.example"
    response = await app_client.put(
        "/v1/admin/sources/web", json={"allowed_origins": [shop]}, headers=bearer(keys.admin)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "web", "allowed_origins": [shop]}
    response = await app_client.post(
        "/v1/admin/keys", json={"kind": "write", "source": "web"}, headers=bearer(keys.admin)
    )
    assert response.status_code == 201, response.text
    web_key = response.json()["secret"]

    response = await app_client.post(
        "/v1/t", json=track("u"), headers={**basic(web_key), "Origin": "https://evil.example"}
    )
    error = error_of(response, 403)
    says(error, "origin", "evil.example")

    response = await app_client.post(
        "/v1/t", json=track("u"), headers={**basic(web_key), "Origin": shop}
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == shop
    # a server-side sender (no Origin) is not a browser: the origin list does not apply
    response = await app_client.post("/v1/t", json=track("u"), headers=basic(web_key))
    assert response.status_code == 200, response.text


async def test_narrowing_a_source_applies_at_once(
    app_client: httpx.AsyncClient, keys: Any, services: Services
) -> None:
    web_key = services.keys.create("write", "web2").secret
    evil = {**basic(web_key), "Origin": "https://evil.example"}
    response = await app_client.post("/v1/t", json=track("u"), headers=evil)
    assert response.status_code == 200  # open source; the key is now cached
    response = await app_client.put(
        "/v1/admin/sources/web2",
        json={"allowed_origins": ["https://shop.example"]},
        headers=bearer(keys.admin),
    )
    assert response.status_code == 200, response.text
    response = await app_client.post("/v1/t", json=track("u"), headers=evil)
    error_of(response, 403)


@pytest.mark.parametrize("kind", ["write", "server", None])
async def test_only_admin_keys_configure_sources(
    app_client: httpx.AsyncClient, keys: Any, kind: str | None
) -> None:
    headers = bearer(getattr(keys, kind)) if kind else {}
    response = await app_client.put(
        "/v1/admin/sources/web", json={"allowed_origins": []}, headers=headers
    )
    error_of(response, 403 if kind else 401)


async def test_admin_body_errors_are_400(app_client: httpx.AsyncClient, keys: Any) -> None:
    for body in (b"{", b'{"allowed_origins": "x"}', b"\xff"):
        response = await app_client.put(
            "/v1/admin/sources/web", content=body, headers=bearer(keys.admin)
        )
        error_of(response, 400)
    response = await app_client.post(
        "/v1/admin/keys", json={"kind": "root"}, headers=bearer(keys.admin)
    )
    says(error_of(response, 400), "root")


# -- accepted forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "application/json;charset=UTF-8",
        "text/plain;charset=UTF-8",
        None,
    ],
)
async def test_accepted_content_types(
    app_client: httpx.AsyncClient,
    keys: Any,
    processed: Callable[[], Any],
    content_type: str | None,
) -> None:
    headers = basic(keys.write)
    if content_type:
        headers["Content-Type"] = content_type
    response = await app_client.post(
        "/v1/track", content=json.dumps(track("ct-user", "ct-1")).encode(), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    await processed()
    events = await timeline(app_client, keys.server, "user_id:ct-user")
    assert [e["messageId"] for e in events] == ["ct-1"]


async def test_gzip_body(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    body = {"batch": [track("gz", f"gz-{i}") for i in range(3)], "sentAt": None}
    response = await app_client.post(
        "/v1/batch",
        content=gzip.compress(json.dumps(body).encode()),
        headers={**basic(keys.write), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 3, "duplicates": 0}
    await processed()
    assert (await profile(app_client, keys.server, "user_id:gz"))["event_counts"] == {"Clicked": 3}


async def test_write_key_locations_and_basic_wins(
    app_client: httpx.AsyncClient, keys: Any, services: Services, processed: Callable[[], Any]
) -> None:
    other = services.keys.create("write", "other").secret
    post = app_client.post
    # Basic auth (Segment's SDKs), body writeKey (analytics.js), ?writeKey= (beacon)
    assert (await post("/v1/track", json=track("k1"), headers=basic(keys.write))).status_code == 200
    assert (
        await post("/v1/track", json={**track("k2"), "writeKey": keys.write})
    ).status_code == 200
    assert (
        await post("/v1/batch", json={"batch": [track("k3")], "writeKey": keys.write})
    ).status_code == 200
    assert (
        await post("/v1/track", json=track("k4"), params={"writeKey": keys.write})
    ).status_code == 200
    # Basic wins over the body and the query: the event goes to Basic's source ...
    response = await post(
        "/v1/batch",
        json={"batch": [track("k5")], "writeKey": keys.write},
        params={"writeKey": keys.write},
        headers=basic(other),
    )
    assert response.status_code == 200, response.text
    # ... and a bad Basic key is not rescued by a good body key
    response = await post(
        "/v1/track", json={**track("k6"), "writeKey": keys.write}, headers=basic("rlv_w_nope")
    )
    error_of(response, 401)
    # the body key wins over the query key
    response = await post(
        "/v1/track", json={**track("k7"), "writeKey": other}, params={"writeKey": "rlv_w_nope"}
    )
    assert response.status_code == 200, response.text

    await processed()
    sources = {}
    for user in ("k1", "k2", "k3", "k4", "k5", "k7"):
        (event,) = await timeline(app_client, keys.server, f"user_id:{user}")
        sources[user] = event["source"]
    assert sources == {
        "k1": "default",
        "k2": "default",
        "k3": "default",
        "k4": "default",
        "k5": "other",
        "k7": "other",
    }
    response = await app_client.get("/v1/profiles/user_id:k6", headers=bearer(keys.server))
    error_of(response, 404)


SINGLE_BODIES: dict[str, dict[str, Any]] = {
    "track": {"event": "Clicked"},
    "identify": {"traits": {"plan": "pro"}},
    "page": {"name": "Home"},
    "screen": {"name": "Home"},
    "group": {"groupId": "g1", "traits": {"name": "Acme"}},
    "alias": {"previousId": "old-id"},
}


async def test_every_single_event_path_implies_its_type(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    for name, event_type in SINGLE.items():
        user = f"path-{name}"
        body = {"userId": user, "messageId": f"m-{name}", **SINGLE_BODIES[event_type]}
        response = await app_client.post(
            f"/v1/{name}", json=body, headers={**basic(keys.write), "Content-Type": "text/plain"}
        )
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"success": True, "accepted": 1, "duplicates": 0}
    await processed()
    for name, event_type in SINGLE.items():
        (event,) = await timeline(app_client, keys.server, f"user_id:path-{name}")
        assert (event["type"], event["messageId"]) == (event_type, f"m-{name}")


@pytest.mark.parametrize("path", BATCH_PATHS)
async def test_every_batch_path(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any], path: str
) -> None:
    user = "batch" + path.replace("/", "-")
    batch = [
        {"type": "identify", "userId": user, "traits": {"plan": "pro"}},
        {"type": "track", "userId": user, "event": "Clicked"},
        {"type": "page", "userId": user, "name": "Home"},
    ]
    if path.startswith("/beacon"):
        # RudderStack's beacon: key in the query, text/plain, no Authorization header
        response = await app_client.post(
            path,
            params={"writeKey": keys.write},
            content=json.dumps({"batch": batch}),
            headers={"Content-Type": "text/plain"},
        )
    else:
        response = await app_client.post(path, json={"batch": batch}, headers=basic(keys.write))
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 3, "duplicates": 0}
    await processed()
    found = await profile(app_client, keys.server, f"user_id:{user}")
    assert found["type_counts"] == {"identify": 1, "track": 1, "page": 1}
    assert found["traits"] == {"plan": "pro"}


async def test_sdk_shaped_batch_with_null_ids_and_context_traits(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    """What segment-analytics-python and rudder-sdk-python put on the wire."""
    body = {
        "batch": [
            {
                "integrations": {},
                "anonymousId": None,
                "timestamp": "2025-01-02T03:04:05.000+00:00",
                "context": {"traits": {"email": "a@example.com"}, "library": {"name": "x"}},
                "type": "identify",
                "userId": "sdk-1",
                "messageId": "sdk-m1",
                "channel": "server",
            },
            {
                "anonymousId": None,
                "userId": "sdk-1",
                "type": "track",
                "event": "Viewed",
                "properties": {"price": 9.99},
                "messageId": "sdk-m2",
            },
            {
                "type": "alias",
                "previousId": "sdk-1",
                "userId": "sdk-1",
                "anonymousId": None,
                "messageId": "sdk-m3",
            },
        ],
        "sentAt": "2026-01-01T00:00:00.5+00:00",
        "writeKey": keys.write,
    }
    response = await app_client.post("/v1/batch", json=body, headers=basic(keys.write))
    assert response.json() == {"success": True, "accepted": 3, "duplicates": 0}
    await processed()
    found = await profile(app_client, keys.server, "email:A@example.com")
    assert found["traits"] == {"email": "a@example.com"}
    assert found["type_counts"] == {"identify": 1, "track": 1, "alias": 1}
    assert found["merges"] == []


async def test_mixed_batch_keeps_valid_events_and_reports_each_rejected_one(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any], services: Services
) -> None:
    batch = [
        track("mix-a", "mix-1"),
        {"type": "track", "userId": True, "event": "e"},
        track("mix-a", "mix-2"),
        {"type": "track", "event": "no ids"},
        track("mix-b", "mix-3", properties={"blob": BIG}),
        {"type": "identify", "userId": "mix-b", "traits": {"plan": "pro"}, "messageId": "mix-4"},
        {"type": "track", "userId": "mix-a", "event": "e", "properties": nested_object(1)},
        "not an event",
    ]
    response = await app_client.post("/v1/batch", json={"batch": batch}, headers=basic(keys.write))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["success"] is True
    assert report["accepted"] == 3
    assert report["duplicates"] == 0
    rejected = {(r["location"], r["code"]) for r in report["rejected"]}
    assert rejected == {
        ("batch[1].userId", "invalid_type"),
        ("batch[3].userId", "missing"),
        ("batch[4]", "event_too_large"),
        ("batch[6].properties", "invalid_type"),
        ("batch[7]", "invalid_type"),
    }
    for item in report["rejected"]:
        assert item["message"]
    await processed()
    a = await profile(app_client, keys.server, "user_id:mix-a")
    assert a["event_counts"] == {"Clicked": 2}
    assert [e["messageId"] for e in await timeline(app_client, keys.server, "user_id:mix-a")] == [
        "mix-2",
        "mix-1",
    ]
    b = await profile(app_client, keys.server, "user_id:mix-b")
    assert (b["traits"], b["event_counts"], b["events_applied"]) == ({"plan": "pro"}, {}, 1)
    rejected_total = services.metrics.registry.get_sample_value(
        "relevo_events_rejected_total", {"reason": "invalid_event"}
    )
    assert rejected_total == 5


async def test_duplicates_are_reported_not_stored_twice(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    body = {"batch": [track("dup", "dup-1"), track("dup", "dup-2")]}
    first = await app_client.post("/v1/batch", json=body, headers=basic(keys.write))
    again = await app_client.post("/v1/batch", json=body, headers=basic(keys.write))
    assert first.json() == {"success": True, "accepted": 2, "duplicates": 0}
    assert again.json() == {"success": True, "accepted": 0, "duplicates": 2}
    await processed()
    assert (await profile(app_client, keys.server, "user_id:dup"))["events_applied"] == 2


# -- CORS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COLLECT_PATHS)
async def test_cors_preflight(app_client: httpx.AsyncClient, path: str) -> None:
    origin = "http://127.0.0.1:8766"
    response = await app_client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "anonymousid,authorization,content-type,sentat",
        },
    )
    assert response.status_code == 204, response.text
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "anonymousid", "sentat"} <= allowed
    assert response.headers["access-control-allow-origin"] in (origin, "*")
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_preflight_without_origin_still_allows(app_client: httpx.AsyncClient) -> None:
    response = await app_client.options("/v1/t")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"


async def test_cross_origin_responses_carry_allow_origin(
    app_client: httpx.AsyncClient, keys: Any
) -> None:
    origin = "http://127.0.0.1:8766"
    ok = await app_client.post(
        "/v1/t",
        content=json.dumps(track("cors")),
        headers={**basic(keys.write), "Origin": origin, "Content-Type": "text/plain"},
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == origin
    assert "origin" in ok.headers["vary"].lower()
    # errors too, so the browser SDK can read why it was refused
    bad = await app_client.post(
        "/v1/t", content=b"{", headers={**basic(keys.write), "Origin": origin}
    )
    error_of(bad, 400)
    assert bad.headers["access-control-allow-origin"] == origin
    same_origin = await app_client.post("/v1/t", json=track("cors"), headers=basic(keys.write))
    assert "access-control-allow-origin" not in same_origin.headers


# -- backpressure -------------------------------------------------------------------------------


async def test_backpressure_answers_429_with_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    async with serve(make_settings(max_pending_events=0)) as (client, write):
        response = await client.post("/v1/track", json=track("u"), headers=basic(write))
        error = error_of(response, 429)
        assert error["code"] == "overloaded"
        assert int(response.headers["retry-after"]) >= 1
        response = await client.post(
            "/v1/batch", json={"batch": [track("u")]}, headers=basic(write)
        )
        error_of(response, 429)
        metrics = (await client.get("/metrics")).text
        assert "relevo_collect_throttled_total 2.0" in metrics


# -- profile API --------------------------------------------------------------------------------


async def test_profile_api_scopes(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    response = await app_client.post(
        "/v1/identify",
        json={"userId": "scope", "traits": {"plan": "pro"}},
        headers=basic(keys.write),
    )
    assert response.status_code == 200
    await processed()
    for path in ("/v1/profiles/user_id:scope", "/v1/profiles/user_id:scope/events"):
        error_of(await app_client.get(path), 401)
        error_of(await app_client.get(path, headers=basic(keys.write)), 401)
        says(error_of(await app_client.get(path, headers=bearer(keys.write)), 403), "write")
        error_of(await app_client.get(path, headers=bearer("rlv_s_unknown")), 401)
        assert (await app_client.get(path, headers=bearer(keys.server))).status_code == 200
        assert (await app_client.get(path, headers=bearer(keys.admin))).status_code == 200
    found = await profile(app_client, keys.server, "user_id:scope")
    assert found["traits"] == {"plan": "pro"}
    assert {"type": "user_id", "value": "scope"} in found["identities"]

    path = "/v1/profiles/user_id:scope"
    error_of(await app_client.delete(path, headers=bearer(keys.write)), 403)
    says(error_of(await app_client.delete(path, headers=bearer(keys.server)), 403), "admin")
    assert (await app_client.get(path, headers=bearer(keys.server))).status_code == 200
    response = await app_client.delete(path, headers=bearer(keys.admin))
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] is True
    error_of(await app_client.get(path, headers=bearer(keys.server)), 404)
    error_of(await app_client.get(path + "/events", headers=bearer(keys.server)), 404)


async def test_write_key_is_refused_on_every_non_collect_route(
    app: Starlette, app_client: httpx.AsyncClient, keys: Any
) -> None:
    public = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    # browsers ask decisions with their write key (and a verified identity): test_decide_api
    browser = {"/v1/decide"}
    checked = 0
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path in COLLECT_PATHS or route.path in public or route.path in browser:
            continue
        path = re.sub(r"\{(\w+):int\}", "1", route.path)
        path = re.sub(r"\{(\w+)(:\w+)?\}", "user_id:someone", path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            for headers, status in ((bearer(keys.write), 403), (basic(keys.write), 401), ({}, 401)):
                response = await app_client.request(method, path, headers=headers, json={})
                error_of(response, status)
            checked += 1
    assert checked >= 8


async def test_timeline_pagination_walks_everything_newest_first(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    # 25 events, three to a second: ties on time are ordered by messageId
    batch = [
        track("pager", f"m-{i:02d}", timestamp=f"2025-06-01T00:00:{i // 3:02d}.000Z")
        for i in range(25)
    ]
    response = await app_client.post("/v1/batch", json={"batch": batch}, headers=basic(keys.write))
    assert response.json()["accepted"] == 25
    await processed()
    expected = sorted(((e["timestamp"], e["messageId"]) for e in batch), reverse=True)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        response = await app_client.get(
            "/v1/profiles/user_id:pager/events", params=params, headers=bearer(keys.server)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 4
        seen += [e["messageId"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert seen == [m for _, m in expected]
    assert len(set(seen)) == 25
    assert pages == 7


async def test_timeline_pages_keep_events_that_tie_on_time_and_message_id(
    app_client: httpx.AsyncClient, keys: Any, services: Services, processed: Callable[[], Any]
) -> None:
    """Dedup is per source, so two sources may store one messageId at one time: a page
    boundary between the two must not lose either."""
    other = services.keys.create("write", "server-side").secret
    same = track("tie", "order-1", timestamp="2025-06-01T00:00:00.000Z")
    for key in (keys.write, other, keys.write):
        response = await app_client.post("/v1/batch", json={"batch": [same]}, headers=basic(key))
        assert response.status_code == 200
    await processed()
    sources: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        response = await app_client.get(
            "/v1/profiles/user_id:tie/events", params=params, headers=bearer(keys.server)
        )
        page = response.json()
        sources += [e["source"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(sources) == ["default", "server-side"]


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", ""])
async def test_bad_limit_is_400(app_client: httpx.AsyncClient, keys: Any, limit: str) -> None:
    response = await app_client.get(
        "/v1/profiles/user_id:x/events", params={"limit": limit}, headers=bearer(keys.server)
    )
    says(error_of(response, 400), "limit", "200")


async def test_bad_cursor_and_identifier_are_400_unknown_is_404(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    await app_client.post("/v1/track", json=track("known"), headers=basic(keys.write))
    await processed()
    response = await app_client.get(
        "/v1/profiles/user_id:known/events",
        params={"cursor": "!!not-a-cursor"},
        headers=bearer(keys.server),
    )
    says(error_of(response, 400), "cursor")
    says(
        error_of(await app_client.get("/v1/profiles/user_id:", headers=bearer(keys.server)), 400),
        "user_id:",
    )
    for ref in ("user_id:nobody", "prf_00000000000000000000", "email:nobody@example.com"):
        response = await app_client.get(f"/v1/profiles/{ref}", headers=bearer(keys.server))
        says(error_of(response, 404), ref)
        response = await app_client.get(f"/v1/profiles/{ref}/events", headers=bearer(keys.server))
        error_of(response, 404)


async def test_unknown_route_and_method_are_json_errors(app_client: httpx.AsyncClient) -> None:
    assert error_of(await app_client.get("/v1/nothing"), 404)["code"] == "not_found"
    assert error_of(await app_client.get("/v1/track"), 405)["code"] == "method_not_allowed"


# -- operations ---------------------------------------------------------------------------------


async def test_health_ready_and_metrics(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    response = await app_client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = await app_client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "processing_lag": 0}

    await app_client.post("/v1/track", json=track("ops", "ops-1"), headers=basic(keys.write))
    await app_client.post("/v1/track", json=track("ops", "ops-1"), headers=basic(keys.write))
    await app_client.post(
        "/v1/batch",
        json={"batch": [track("ops", "ops-2"), {"type": "track"}]},
        headers=basic(keys.write),
    )
    await processed()
    response = await app_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    names = {name for name, _ in samples}
    for name in (
        "relevo_events_accepted_total",
        "relevo_events_rejected_total",
        "relevo_events_duplicate_total",
        "relevo_processing_lag_events",
        "relevo_http_request_duration_seconds_count",
        "relevo_http_request_duration_seconds_bucket",
    ):
        assert name in names, name
    assert samples[("relevo_events_accepted_total", (("source", "default"),))] == 2
    assert samples[("relevo_events_duplicate_total", ())] == 1
    assert samples[("relevo_events_rejected_total", (("reason", "invalid_event"),))] == 1
    assert samples[("relevo_processing_lag_events", ())] == 0
    assert samples[("relevo_events_processed_total", ())] == 2
    track_requests = (
        "relevo_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "collect_track"), ("status", "200")),
    )
    assert samples[track_requests] == 2


async def test_readyz_is_503_before_startup(services: Services) -> None:
    app = create_app(services=services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "starting"


async def test_openapi_documents_every_route(app: Starlette, app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    undocumented = []
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in (route.methods or set()) - {"HEAD"}:
            if method.lower() not in document["paths"].get(path, {}):
                undocumented.append(f"{method} {path}")
    assert not undocumented
    routed = {re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path) for r in app.routes if isinstance(r, Route)}
    assert set(document["paths"]) == routed


# -- fuzz: whatever arrives, never a 5xx ------------------------------------------------------

FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "event",
    "name",
    "groupId",
    "previousId",
    "properties",
    "traits",
    "context",
    "integrations",
    "timestamp",
    "sentAt",
    "originalTimestamp",
    "writeKey",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["track", "identify", "alias", "2025-01-01T00:00:00Z"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
events = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
bodies = st.one_of(
    st.binary(max_size=200),
    events.map(lambda e: json.dumps(e).encode()),
    st.lists(events, max_size=5).map(lambda b: json.dumps({"batch": b}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(COLLECT_PATHS),
    body=bodies,
    gzipped=st.booleans(),
    encoding=st.sampled_from([None, None, "gzip", "br"]),
)
async def test_fuzzed_bodies_never_get_a_5xx(
    app_client: httpx.AsyncClient,
    keys: Any,
    path: str,
    body: bytes,
    gzipped: bool,
    encoding: str | None,
) -> None:
    headers = basic(keys.write)
    if gzipped:
        body = gzip.compress(body)
        encoding = encoding or "gzip"
    if encoding:
        headers["Content-Encoding"] = encoding
    response = await app_client.post(path, content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error_of(response, response.status_code)
    else:
        assert response.json()["success"] is True


async def test_a_forged_timeline_cursor_is_a_client_error(
    app_client: httpx.AsyncClient, keys: Any, processed: Callable[[], Any]
) -> None:
    import base64

    response = await app_client.post(
        "/v1/batch", json={"batch": [track("forged", "m-1")]}, headers=basic(keys.write)
    )
    assert response.json()["accepted"] == 1
    await processed()
    cursor = base64.urlsafe_b64encode(f"{2**70}:{2**70}:m".encode()).decode()
    answer = await app_client.get(
        f"/v1/profiles/user_id:forged/events?cursor={cursor}", headers=bearer(keys.server)
    )
    error_of(answer, 400)


async def test_a_wrong_method_is_a_405_that_names_every_method_of_the_path(
    app_client: httpx.AsyncClient, keys: Any
) -> None:
    answer = await app_client.request("PATCH", "/v1/profiles/user_id:x", headers=bearer(keys.admin))
    assert answer.status_code == 405
    assert set(answer.headers["allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}
    answer = await app_client.get("/v1/batch")
    assert answer.status_code == 405
    assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}


async def test_request_metrics_are_labelled_by_the_handler_that_answered(
    app_client: httpx.AsyncClient, keys: Any
) -> None:
    await app_client.get("/v1/profiles/user_id:nobody", headers=bearer(keys.server))
    await app_client.delete("/v1/profiles/user_id:nobody", headers=bearer(keys.admin))
    text = (await app_client.get("/metrics")).text
    assert 'route="get_profile",status="404"' in text.replace('method="GET",', "")
    assert 'route="delete_profile",status="404"' in text.replace('method="DELETE",', "")
