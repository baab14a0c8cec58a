"""Destinations through the API, in process, against a real HTTP receiver on 127.0.0.1.

The app runs in the test's event loop (its lifespan starts the log writer, the processor and the
dispatcher) on a SQLite store in ``tmp_path``, with the system clock: retries really wait. What is
proven here:

- the SSRF matrix (S8) is refused when a destination is saved, with the reason, and again when
  something is sent: a name that resolves to a refused address, or an allowlist that shrank
  between save and send, fails the delivery into the failed-deliveries store and no request
  reaches the receiver; redirects are not followed;
- permanent errors (400, 410) go straight to the failed-deliveries store, 429 waits for its
  ``Retry-After``, a spent retry budget moves the delivery there too (R11, R12);
- failed deliveries are listed, inspected and replayed through the API and the CLI (a separate
  ``relevo deliveries`` process on the same store file), and a replay sends the same
  ``webhook-id`` again.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from relevo.config import Settings
from relevo.services import Services, build_services
from relevo.testing.receiver import Answer, Received, WebhookReceiver, always, script
from relevo.web.app import create_app

RETRY_FAST = {
    "delivery_retry_base_seconds": 0.2,
    "delivery_retry_max_seconds": 0.5,
}
ALLOW_LOOPBACK = {"outbound_allow_hosts": ["127.0.0.1"]}


@dataclass
class Node:
    """A running app (in process) with an admin and a write key."""

    services: Services
    http: httpx.AsyncClient
    admin_key: str
    write_key: str
    store_url: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    async def segment(self, name: str, rule: str) -> None:
        response = await self.http.post(
            "/v1/segments", json={"name": name, "rule": rule}, headers=self.admin
        )
        assert response.status_code == 201, response.text

    async def destination(self, **definition: Any) -> httpx.Response:
        return await self.http.post("/v1/destinations", json=definition, headers=self.admin)

    async def webhook(self, name: str, url: str, **definition: Any) -> str:
        """Create a webhook destination; returns its signing secret."""
        response = await self.destination(name=name, type="webhook", url=url, **definition)
        assert response.status_code == 201, response.text
        secret: str = response.json()["secret"]
        return secret

    async def identify(self, user_id: str, **traits: Any) -> None:
        auth = base64.b64encode(f"{self.write_key}:".encode()).decode()
        response = await self.http.post(
            "/v1/identify",
            json={"userId": user_id, "traits": traits},
            headers={"Authorization": f"Basic {auth}"},
        )
        assert response.status_code == 200, response.text

    async def failed(self, destination: str | None = None) -> list[dict[str, Any]]:
        params = {"destination": destination} if destination else {}
        response = await self.http.get("/v1/failed-deliveries", params=params, headers=self.admin)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest.fixture
def node_settings(tmp_path: Path, no_ambient_config: None) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"store_url": f"sqlite:///{tmp_path / 'relevo.db'}"}
        values.update(overrides)
        return Settings(**values)

    return make


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Node]:
    """The app with its lifespan running, on the system clock; everything closed at the end."""
    services = build_services(settings)
    try:
        admin = services.keys.create("admin").secret
        write = services.keys.create("write").secret
        app = create_app(services=services)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http,
        ):
            yield Node(services, http, admin, write, settings.store_url)
    finally:
        services.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


def verify(secret: str, request: Received) -> Any:
    """The reference Standard Webhooks verifier's verdict on one request (raises if invalid)."""
    return Webhook(secret).verify(request.body, request.headers)


# -- SSRF at save time ------------------------------------------------------------------------

SSRF_MATRIX = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://0x7f000001/hook", "loopback"),
    ("http://2130706433/hook", "loopback"),
    ("http://0177.0.0.1/hook", "loopback"),
    ("http://127.1/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://100.64.0.1/hook", "shared"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:70/_hello", "scheme"),
]


@pytest.mark.parametrize(("url", "reason"), SSRF_MATRIX)
async def test_ssrf_matrix_is_refused_at_save(
    node_settings: Callable[..., Settings], url: str, reason: str
) -> None:
    async with running(node_settings()) as node:
        response = await node.destination(name="target", type="webhook", url=url, segments=["*"])
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unsafe_url"
        assert [d["code"] for d in error["details"]] == [reason]
        assert error["message"]  # says why, for a person
        listed = await node.http.get("/v1/destinations", headers=node.admin)
        assert listed.json()["data"] == []


async def test_allowlist_admits_the_named_internal_host_only(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    async with running(node_settings(**ALLOW_LOOPBACK)) as node:
        admitted = await node.destination(
            name="ok", type="webhook", url=receiver.url(), segments=["*"]
        )
        assert admitted.status_code == 201, admitted.text
        # naming 127.0.0.1 admits neither other spellings' hosts nor other loopback addresses
        for url in ("http://localhost/hook", "http://127.0.0.2/hook", "http://[::1]/hook"):
            refused = await node.destination(name="no", type="webhook", url=url, segments=["*"])
            assert refused.status_code == 400, (url, refused.text)
        # metadata stays refused whatever the allowlist says
    async with running(node_settings(outbound_allow_hosts=["169.254.169.254"])) as node:
        refused = await node.destination(
            name="meta", type="webhook", url="http://169.254.169.254/", segments=["*"]
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["details"][0]["code"] == "metadata"


# -- SSRF at send time ------------------------------------------------------------------------


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Sequence[str]]) -> list[str]:
    """Answer ``getaddrinfo`` for the given names (other names resolve as usual)."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            asked.append(host)
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (address, port, 0, 0) if ":" in address else (address, port),
                )
                for address in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


async def wait_failed(
    node: Node, destination: str, count: int = 1, timeout: float = 10
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        found = await node.failed(destination)
        return len(found) >= count

    deadline = anyio.current_time() + timeout
    while not await enough():
        if anyio.current_time() > deadline:
            pytest.fail(f"no {count} failed deliveries of {destination} after {timeout}s")
        await anyio.sleep(0.02)
    return found


@pytest.mark.parametrize(
    ("host", "addresses", "allowed", "reason"),
    [
        # DNS rebinding: saved as a name (judged by name), resolves to loopback when sent
        ("rebind.example.com", ["127.0.0.1"], [], "a loopback address"),
        # a public first answer does not excuse a private second one
        ("split.example.com", ["93.184.216.34", "127.0.0.1"], [], "a loopback address"),
        # an allowlisted internal name that resolves to the metadata endpoint
        ("hooks.corp.test", ["169.254.169.254"], ["hooks.corp.test"], "metadata endpoint"),
    ],
)
async def test_a_name_resolving_to_a_refused_address_fails_at_send(
    node_settings: Callable[..., Settings],
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    addresses: list[str],
    allowed: list[str],
    reason: str,
) -> None:
    asked = fake_dns(monkeypatch, {host: addresses})
    async with running(node_settings(outbound_allow_hosts=allowed, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        # saved: the name passes the save-time check (names are judged by address at send)
        await node.webhook("target", receiver.url(host=host), segments=["gold"])
        await node.identify("u1", plan="gold")
        [failed] = await wait_failed(node, "target")
        assert failed["attempts"] == 1  # permanent: not retried
        assert failed["reason"].startswith("refused:")
        assert host in failed["reason"]
        assert reason in failed["reason"]
    assert asked, "the name was resolved at send time"
    assert receiver.seen() == []  # nothing reached the receiver listening on 127.0.0.1


async def test_an_allowlist_that_shrank_between_save_and_send_fails_the_delivery(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    async with running(node_settings(**ALLOW_LOOPBACK)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("target", receiver.url(), segments=["gold"])
    # the operator removes 127.0.0.1 from the allowlist; the saved destination stays
    async with running(node_settings(**RETRY_FAST)) as node:
        await node.identify("u1", plan="gold")
        [failed] = await wait_failed(node, "target")
        assert failed["attempts"] == 1
        assert "refused" in failed["reason"]
        assert "127.0.0.1" in failed["reason"]
        assert "loopback" in failed["reason"]
    assert receiver.seen() == []


async def test_redirects_are_not_followed(node_settings: Callable[..., Settings]) -> None:
    with WebhookReceiver() as internal, WebhookReceiver() as public:
        public.respond = always(302, location=internal.url("/internal"))
        async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
            await node.segment("gold", 'traits.plan == "gold"')
            await node.webhook("target", public.url(), segments=["gold"])
            await node.identify("u1", plan="gold")
            [failed] = await wait_failed(node, "target")
            assert "302" in failed["reason"]
            assert "redirects are not followed" in failed["reason"]
            assert failed["attempts"] == 1
        assert len(public.seen()) == 1
        assert internal.seen() == []


# -- permanent errors, Retry-After, the retry budget -------------------------------------------


async def wait_delivered(
    receiver: WebhookReceiver, count: int, timeout: float = 10
) -> list[Received]:
    deadline = anyio.current_time() + timeout
    while len(receiver.delivered()) < count:
        if anyio.current_time() > deadline:
            pytest.fail(
                f"{len(receiver.delivered())} of {count} deliveries after {timeout}s; "
                f"seen: {[(r.status, r.webhook_id) for r in receiver.seen()]}"
            )
        await anyio.sleep(0.01)
    return receiver.delivered()


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "HTTP 400 Bad Request"),
        (401, "HTTP 401 Unauthorized"),
        (404, "HTTP 404 Not Found"),
        (413, "HTTP 413 Content Too Large"),
    ],
)
async def test_a_4xx_goes_straight_to_the_failed_store(
    node_settings: Callable[..., Settings],
    receiver: WebhookReceiver,
    status: int,
    reason: str,
) -> None:
    receiver.respond = always(status)
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("u1", plan="gold")
        [failed] = await wait_failed(node, "target")
        assert failed["attempts"] == 1
        assert failed["reason"] == reason
        await anyio.sleep(0.7)  # longer than any backoff of RETRY_FAST: no retry came
        assert len(receiver.seen()) == 1
        assert await node.failed("target") == [failed]


async def test_410_fails_the_delivery_and_disables_the_endpoint(
    node_settings: Callable[..., Settings],
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.respond = always(410)
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("u1", plan="gold")
        [failed] = await wait_failed(node, "target")
        assert failed["attempts"] == 1
        assert failed["reason"] == "HTTP 410 Gone: the endpoint is gone"
        definition = await node.http.get("/v1/destinations/target", headers=node.admin)
        assert definition.json()["enabled"] is False
        assert any(
            r.levelname == "ERROR" and "target" in r.getMessage() and "410" in r.getMessage()
            for r in caplog.records
        )
        # nothing more is sent to it, and re-enabling it is the operator's call
        await node.identify("u2", plan="gold")
        await anyio.sleep(0.5)
        assert len(receiver.seen()) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried_with_the_same_webhook_id(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver, status: int
) -> None:
    receiver.respond = script([Answer(status), Answer(status)])
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        secret = await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("u1", plan="gold")
        await wait_delivered(receiver, 1)
        attempts = receiver.seen()
        assert [a.status for a in attempts] == [status, status, 200]
        assert len({a.webhook_id for a in attempts}) == 1
        assert {a.headers["idempotency-key"] for a in attempts} == {attempts[0].webhook_id}
        assert len({a.body for a in attempts}) == 1
        for attempt in attempts:  # every attempt is signed afresh, and verifies
            assert verify(secret, attempt)["segment"] == "gold"
        assert await node.failed() == []


async def test_429_retry_after_is_honoured(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    # the 429 takes 0.3 s to come back: Retry-After counts from the answer, not the request
    receiver.respond = script([Answer(429, {"Retry-After": "2"}, delay=0.3)])
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("u1", plan="gold")
        await wait_delivered(receiver, 1)
        first, second = receiver.seen()
        assert (first.status, second.status) == (429, 200)
        assert first.webhook_id == second.webhook_id
        # without Retry-After the backoff would be at most 0.2 s here
        assert second.at - (first.at + 0.3) >= 2.0 - 0.02


async def test_a_spent_retry_budget_keeps_every_delivery_and_replay_sends_the_same_ids(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    receiver.respond = always(503)
    people = [f"u{i}" for i in range(5)]
    async with running(
        node_settings(**ALLOW_LOOPBACK, **RETRY_FAST, delivery_retry_budget_seconds=1.0)
    ) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        secret = await node.webhook("target", receiver.url(), segments=["gold"])
        for person in people:
            await node.identify(person, plan="gold")
        failed = await wait_failed(node, "target", count=len(people))
        assert len(failed) == len(people)  # none silently dropped
        attempted = {r.webhook_id for r in receiver.seen()}
        assert {f["webhook_id"] for f in failed} == attempted
        for item in failed:
            assert item["reason"] == "HTTP 503 Service Unavailable"
            assert item["attempts"] >= 2
            tries = [r for r in receiver.seen() if r.webhook_id == item["webhook_id"]]
            assert len(tries) == item["attempts"]
            assert len({r.body for r in tries}) == 1
        # inspect: the payload is the body that was sent
        one = failed[0]
        shown = await node.http.get(f"/v1/failed-deliveries/{one['id']}", headers=node.admin)
        assert shown.status_code == 200
        sent = next(r for r in receiver.seen() if r.webhook_id == one["webhook_id"])
        assert shown.json()["payload"] == sent.json()
        assert shown.json()["payload"]["event"] == "Segment Entered"
        missing = await node.http.get("/v1/failed-deliveries/999999", headers=node.admin)
        assert missing.status_code == 404

        # replay one by id, then the rest of the destination's
        receiver.respond = always(200)
        replay = await node.http.post(
            "/v1/failed-deliveries/replay", json={"ids": [one["id"]]}, headers=node.admin
        )
        assert replay.json() == {"replayed": 1}
        [first] = await wait_delivered(receiver, 1)
        assert first.webhook_id == one["webhook_id"]
        assert first.json() == shown.json()["payload"]
        verify(secret, first)
        again = await node.http.post(
            "/v1/failed-deliveries/replay", json={"ids": [one["id"]]}, headers=node.admin
        )
        assert again.json() == {"replayed": 0}  # already replayed: not queued twice
        rest = await node.http.post(
            "/v1/failed-deliveries/replay", json={"destination": "target"}, headers=node.admin
        )
        assert rest.json() == {"replayed": len(people) - 1}
        delivered = await wait_delivered(receiver, len(people))
        assert sorted(r.webhook_id or "" for r in delivered) == sorted(
            f["webhook_id"] for f in failed
        )
        assert await node.failed() == []
        await anyio.sleep(0.3)
        assert len(receiver.delivered()) == len(people)  # each exactly once


async def cli(store_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVO_")} | {
        "RELEVO_CONFIG": "/nonexistent/relevo.toml"
    }
    done = await anyio.run_process(
        [sys.executable, "-m", "relevo", "deliveries", *args, "--store-url", store_url],
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_failed_deliveries_through_the_cli(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    receiver.respond = always(400)
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        secret = await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("u1", plan="gold")
        await node.identify("u2", plan="gold")
        failed = await wait_failed(node, "target", count=2)

        # list: one line per failed delivery, from another process on the same store file
        lines = (await cli(node.store_url, "failed")).strip().splitlines()
        rows = [line.split("\t") for line in lines]
        assert [(int(r[0]), r[1], r[2], int(r[3])) for r in rows] == [
            (f["id"], "target", f["webhook_id"], 1) for f in failed
        ]
        assert all(r[5] == "HTTP 400 Bad Request" for r in rows)
        assert (await cli(node.store_url, "failed", "--destination", "other")) == ""

        # show: the payload, as sent
        shown = json.loads(await cli(node.store_url, "show", str(failed[0]["id"])))
        sent = (
            receiver.seen()[0]
            if receiver.seen()[0].webhook_id == failed[0]["webhook_id"]
            else receiver.seen()[1]
        )
        assert shown["payload"] == sent.json()
        assert shown["reason"] == "HTTP 400 Bad Request"

        # replay: the running dispatcher sends it again, with the same webhook id
        receiver.respond = always(200)
        assert (await cli(node.store_url, "replay", str(failed[0]["id"]))).strip() == ("replayed 1")
        [again] = await wait_delivered(receiver, 1)
        assert again.webhook_id == failed[0]["webhook_id"]
        assert again.body == sent.body
        verify(secret, again)
        assert (await cli(node.store_url, "replay", "--destination", "target")).strip() == (
            "replayed 1"
        )
        await wait_delivered(receiver, 2)
        assert (await cli(node.store_url, "failed")) == ""
        assert await node.failed() == []


async def test_effects_after_the_outbox_drained_are_all_delivered(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    """Each effect is fanned out once the previous ones were, one at a time: nothing is skipped
    (outbox ids are never reused, so the fan-out cursor never passes over a new effect)."""
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("target", receiver.url(), segments=["gold"])
        for n in range(1, 4):
            await node.identify(f"u{n}", plan="gold")
            delivered = await wait_delivered(receiver, n, timeout=5)
        ids = [r.webhook_id for r in delivered]
        assert len(set(ids)) == 3  # three effects, three distinct webhook ids


async def metric(node: Node, sample: str) -> float:
    text = (await node.http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample)
    )


async def test_withdrawn_consent_purges_a_queued_delivery(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    receiver.respond = always(503)
    no_consent = 'relevo_deliveries_total{destination="ads",outcome="no_consent"}'
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("ads", receiver.url(), segments=["gold"], consent=["advertising"])
        auth = base64.b64encode(f"{node.write_key}:".encode()).decode()

        async def identify(advertising: bool) -> None:
            response = await node.http.post(
                "/v1/identify",
                json={
                    "userId": "u1",
                    "traits": {"plan": "gold"},
                    "context": {"consent": {"categoryPreferences": {"advertising": advertising}}},
                },
                headers={"Authorization": f"Basic {auth}"},
            )
            assert response.status_code == 200

        await identify(True)
        deadline = anyio.current_time() + 5
        while not receiver.seen():  # queued, and being retried
            assert anyio.current_time() < deadline, "no attempt"
            await anyio.sleep(0.01)
        await identify(False)  # withdrawn while the delivery waits for its next attempt
        deadline = anyio.current_time() + 5
        while await metric(node, no_consent) < 1:
            assert anyio.current_time() < deadline, "the queued delivery was not purged"
            await anyio.sleep(0.02)
        attempts = len(receiver.seen())
        receiver.respond = always(200)
        await anyio.sleep(1.0)  # longer than the longest backoff
        assert len(receiver.seen()) == attempts
        assert receiver.delivered() == []
        assert await node.failed() == []


# -- definitions ------------------------------------------------------------------------------


async def test_destination_definitions_crud(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        secret = await node.webhook("target", receiver.url("/v1"), segments=["gold"])
        shown = (await node.http.get("/v1/destinations/target", headers=node.admin)).json()
        assert shown["secret"] == "whsec_…" + secret[-4:]  # shown once, when made
        listed = (await node.http.get("/v1/destinations", headers=node.admin)).json()["data"]
        assert [d["name"] for d in listed] == ["target"]

        # an update that does not name a secret keeps it: deliveries still verify
        updated = await node.http.put(
            "/v1/destinations/target",
            json={**shown, "url": receiver.url("/v2"), "secret": None},
            headers=node.admin,
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["secret"] == secret
        await node.identify("u1", plan="gold")
        [request] = await wait_delivered(receiver, 1)
        assert request.path == "/v2"
        verify(secret, request)

        # a chosen secret is used; a malformed one is refused when saved
        own = "whsec_" + base64.b64encode(b"k" * 32).decode()
        chosen = await node.http.put(
            "/v1/destinations/target",
            json={**shown, "url": receiver.url("/v2"), "secret": own},
            headers=node.admin,
        )
        assert chosen.json()["secret"] == own
        for bad in ("not-a-secret", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()):
            refused = await node.http.put(
                "/v1/destinations/target", json={**shown, "secret": bad}, headers=node.admin
            )
            assert refused.status_code == 400, (bad, refused.text)

        # the name in the path and in the body must agree
        mismatch = await node.http.put(
            "/v1/destinations/other", json={**shown, "secret": None}, headers=node.admin
        )
        assert mismatch.status_code == 400
        for invalid in (
            {"name": "x", "type": "webhook", "url": receiver.url()},  # subscribes to nothing
            {"name": "x", "type": "audience", "url": receiver.url(), "segments": ["gold"]},
            {"name": "Bad Name", "type": "webhook", "url": receiver.url(), "segments": ["*"]},
            {"name": "x", "type": "sms", "url": receiver.url(), "segments": ["*"]},
        ):
            answer = await node.destination(**invalid)
            assert answer.status_code == 400, (invalid, answer.text)

        # writing needs the admin key
        write = {"Authorization": f"Bearer {node.write_key}"}
        assert (await node.http.get("/v1/destinations", headers=write)).status_code in (401, 403)
        assert (await node.http.get("/v1/failed-deliveries")).status_code == 401

        deleted = await node.http.delete("/v1/destinations/target", headers=node.admin)
        assert deleted.json() == {"deleted": True}
        again = await node.http.delete("/v1/destinations/target", headers=node.admin)
        assert again.status_code == 404
        assert (
            await node.http.get("/v1/destinations/target", headers=node.admin)
        ).status_code == 404

        # every change is audited, and the signing secret never lands in the audit log
        with sqlite3.connect(node_settings().store_url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(
                "SELECT action, target, details FROM audit_log"
                " WHERE action LIKE 'destination.%' ORDER BY id"
            ).fetchall()
        assert [(a, t) for a, t, _ in rows] == [
            ("destination.put", "target"),
            ("destination.put", "target"),
            ("destination.put", "target"),
            ("destination.delete", "target"),
        ]
        assert all(secret not in d and own not in d for _, _, d in rows)


async def test_a_delivery_cut_off_by_a_shutdown_is_sent_after_the_restart(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    receiver.respond = script([Answer(200, delay=60)])  # the first attempt never gets its answer
    settings = node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)
    async with running(settings) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        secret = await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("u1", plan="gold")
        deadline = anyio.current_time() + 5
        while receiver.arrivals < 1:
            assert anyio.current_time() < deadline, "no attempt"
            await anyio.sleep(0.01)
        stopping = anyio.current_time()
    assert anyio.current_time() - stopping < 3  # the shutdown does not wait for the answer
    async with running(settings):
        [delivered] = await wait_delivered(receiver, 1)
    verify(secret, delivered)
    assert delivered.json()["profileId"]
    receiver.stop()  # cuts the first request off: recorded unanswered, with the same id
    first = [r for r in receiver.seen() if r.status == 0]
    assert [r.webhook_id for r in first] == [delivered.webhook_id]


async def test_each_delivery_is_sent_once(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    """Many deliveries at once, answered quickly: none is sent a second time (a delivery that
    has just succeeded is not picked up again by a queue read that started before it)."""
    people = 60
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.webhook("target", receiver.url(), segments=["gold"])
        auth = base64.b64encode(f"{node.write_key}:".encode()).decode()
        batch = [
            {"type": "identify", "userId": f"u{n}", "traits": {"plan": "gold"}}
            for n in range(people)
        ]
        response = await node.http.post(
            "/v1/batch", json={"batch": batch}, headers={"Authorization": f"Basic {auth}"}
        )
        assert response.status_code == 200
        await wait_delivered(receiver, people)
        await anyio.sleep(0.5)
        ids = [r.webhook_id for r in receiver.seen()]
        assert len(ids) == people, f"{len(ids) - len(set(ids))} sent twice"
        assert len(set(ids)) == people


async def test_a_new_destination_receives_what_happens_after_it_was_made(
    node_settings: Callable[..., Settings], receiver: WebhookReceiver
) -> None:
    """Effects from before any destination existed are not queued for the first one made."""
    async with running(node_settings(**ALLOW_LOOPBACK, **RETRY_FAST)) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        await node.identify("early", plan="gold")
        server = {"Authorization": f"Bearer {node.admin_key}"}
        deadline = anyio.current_time() + 5
        while not (await node.http.get("/v1/segments/gold/members", headers=server)).json()["data"]:
            assert anyio.current_time() < deadline, "early never entered"
            await anyio.sleep(0.01)
        await anyio.sleep(0.3)  # the dispatcher has seen the effect, with nowhere to send it
        await node.webhook("target", receiver.url(), segments=["gold"])
        await node.identify("late", plan="gold")
        [request] = await wait_delivered(receiver, 1)
        await anyio.sleep(0.5)
        assert len(receiver.seen()) == 1
        late = await node.http.get("/v1/profiles/user_id:late", headers=server)
        assert request.json()["profileId"] == late.json()["id"]


async def test_ids_beyond_what_the_store_holds_are_client_errors(
    node_settings: Callable[..., Settings],
) -> None:
    """Found by schemathesis: integers past 2**63-1 reached SQLite and answered 500."""
    async with running(node_settings(**ALLOW_LOOPBACK)) as node:
        huge = 2**64
        replay = await node.http.post(
            "/v1/failed-deliveries/replay", json={"ids": [huge]}, headers=node.admin
        )
        assert replay.status_code == 400, replay.text
        listed = await node.http.get(f"/v1/failed-deliveries?after={huge}", headers=node.admin)
        assert listed.status_code == 400, listed.text
        one = await node.http.get(f"/v1/failed-deliveries/{huge}", headers=node.admin)
        assert one.status_code == 404, one.text
        many = await node.http.post(
            "/v1/failed-deliveries/replay", json={"ids": list(range(1, 5001))}, headers=node.admin
        )
        assert many.json() == {"replayed": 0}  # more ids than one SQL statement may bind
