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
        response = await self.http.get(
            "/v1/failed-deliveries", params=params, headers=self.admin
        )
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest.fixture
def node_settings(
    tmp_path: Path, no_ambient_config: None
) -> Callable[..., Settings]:
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
        response = await node.destination(
            name="target", type="webhook", url=url, segments=["*"]
        )
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


def fake_dns(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, Sequence[str]]
) -> list[str]:
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
        ("rebind.example.com", ["127.0.0.1"], [], "loopback"),
        # a public first answer does not excuse a private second one
        ("split.example.com", ["93.184.216.34", "127.0.0.1"], [], "loopback"),
        # an allowlisted internal name that resolves to the metadata endpoint
        ("hooks.corp.test", ["169.254.169.254"], ["hooks.corp.test"], "metadata"),
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
    async with running(
        node_settings(outbound_allow_hosts=allowed, **RETRY_FAST)
    ) as node:
        await node.segment("gold", 'traits.plan == "gold"')
        # saved: the name passes the save-time check (names are judged by address at send)
        await node.webhook("target", receiver.url(host=host), segments=["gold"])
        await node.identify("u1", plan="gold")
        [failed] = await wait_failed(node, "target")
        assert failed["attempts"] == 1  # permanent: not retried
        assert failed["reason"].startswith("refused:")
        assert host in failed["reason"]
        assert reason in failed["reason"] or {
            "loopback": "loopback address",
            "metadata": "metadata endpoint",
        }[reason] in failed["reason"]
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


async def test_redirects_are_not_followed(
    node_settings: Callable[..., Settings]
) -> None:
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
