"""The outbound client against real sockets on 127.0.0.1 (S8, S14, R10, R11).

A small threaded HTTP(S) receiver stands in for a destination; it is reachable only because the
tests admit it through the operator allowlist. Host names other than ``localhost`` are answered
by a stand-in ``getaddrinfo``, so no test leaves the machine.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from relevo.channels.errors import (
    HostNotFound,
    OutboundConnectError,
    OutboundTimeout,
    UnsafeUrl,
)
from relevo.channels.http import OutboundClient, OutboundTimeouts
from relevo.channels.retry import Verdict, classify, retry_after_from_headers
from relevo.channels.signing import new_secret, sign
from relevo.channels.ssrf import OutboundPolicy, check_url
from relevo.errors import ValidationError

LOOPBACK = OutboundPolicy(allow_hosts=frozenset({"127.0.0.1"}))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    scheme: str = "http"
    seen: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        self.server.receiver.seen.append(seen)
        path = self.path
        if path == "/echo":
            self._answer(200, json.dumps({"host": seen.headers.get("host")}).encode())
        elif path == "/redirect":
            internal = f"http://127.0.0.1:{self.server.receiver.port}/internal"
            self._answer(302, Location=internal)
        elif path == "/redirect-metadata":
            self._answer(301, Location="http://169.254.169.254/latest/meta-data/")
        elif path == "/big":
            self._answer(200, b"x" * 1_000_000)
        elif path == "/slow":
            time.sleep(1.0)
            self._answer(200, b"late")
        elif path == "/close":
            self.close_connection = True
            self._answer(200, b"bye", Connection="close")
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self._answer(status, b"failed", Retry_After="30")
        else:
            self._answer(204)

    do_POST = do_DELETE = do_GET = _handle


class _Server(ThreadingHTTPServer):
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that stop reading (body cap, timeouts) reset the connection: expected


def _serve(ssl_context: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), Handler)
    receiver = Receiver(server, scheme="https" if ssl_context else "http")
    server.receiver = receiver
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


@pytest.fixture
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_receiver(tls_ca: trustme.CA) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("receiver.test").configure_cert(context)
    names: list[str | None] = []

    def remember(sock: Any, server_name: str | None, ctx: Any) -> None:
        names.append(server_name)

    context.sni_callback = remember
    for served in _serve(context):
        served.sni = names
        yield served


class ScriptedDNS:
    """Monkeypatched into ``socket.getaddrinfo``: answers by name from a script, counts calls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers  # each lookup of a name pops the next answer (the last repeats)
        self.calls: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.calls.append(str(host))
        script = self.answers.get(str(host))
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = script.pop(0) if len(script) > 1 else script[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> ScriptedDNS:
    scripted = ScriptedDNS({})
    monkeypatch.setattr(socket, "getaddrinfo", scripted)
    return scripted


# --- reaching the receiver at all ---------------------------------------------------------


async def test_the_allowlisted_receiver_gets_the_request(receiver: Receiver) -> None:
    async with OutboundClient(LOOPBACK) as client:
        response = await client.post(
            receiver.url("/ok?x=1"), b'{"a": 1}', {"Content-Type": "application/json"}
        )
    assert response.status == 204
    assert response.remote_address == "127.0.0.1"
    assert response.summary().startswith("HTTP 204 in ")
    (seen,) = receiver.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/ok?x=1", b'{"a": 1}')
    assert seen.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == "8"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["user-agent"].startswith("Relevo-Webhooks/")


async def test_refused_without_the_allowlist(receiver: Receiver) -> None:
    async with OutboundClient() as client:
        for host in ("127.0.0.1", "127.1", "0x7f000001", "2130706433", "[::ffff:127.0.0.1]"):
            with pytest.raises(UnsafeUrl, match="loopback"):
                await client.post(receiver.url("/ok", host=host), b"{}")
    assert receiver.seen == []


async def test_localhost_is_refused_even_with_127_0_0_1_allowlisted(receiver: Receiver) -> None:
    async with OutboundClient(LOOPBACK) as client:
        with pytest.raises(UnsafeUrl, match="loopback name"):
            await client.post(receiver.url("/ok", host="localhost"), b"{}")
    assert receiver.seen == []


async def test_a_name_that_resolves_to_loopback_is_refused_at_connect(
    receiver: Receiver, dns: ScriptedDNS
) -> None:
    dns.answers["hooks.example.com"] = ["127.0.0.1"]
    async with OutboundClient(LOOPBACK) as client:
        with pytest.raises(UnsafeUrl, match="host 'hooks.example.com' resolves to 127.0.0.1"):
            await client.post(receiver.url("/ok", host="hooks.example.com"), b"{}")
    assert dns.calls == ["hooks.example.com"]
    assert receiver.seen == []


async def test_the_client_checks_a_saved_url_again_with_its_own_policy(
    receiver: Receiver,
) -> None:
    saved = check_url(receiver.url("/ok"), LOOPBACK)  # saved while the host was allowlisted
    async with OutboundClient() as client:
        with pytest.raises(UnsafeUrl):
            await client.post(saved, b"{}")
    async with OutboundClient(LOOPBACK) as client:
        assert (await client.post(saved, b"{}")).status == 204


# --- DNS rebinding: the connection goes to the checked address ------------------------------


async def test_the_connection_goes_to_the_checked_ip_without_a_second_lookup(
    receiver: Receiver, dns: ScriptedDNS
) -> None:
    # the first answer is admitted (127.0.0.1 stands in for a public address here); every
    # later answer is a private address: a client that looked up the name again, or let the
    # socket layer resolve it, would connect there
    dns.answers["rebind.example.com"] = ["127.0.0.1", "10.0.0.1"]
    policy = OutboundPolicy(allow_networks=frozenset({ip_network("127.0.0.1/32")}))
    async with OutboundClient(policy) as client:
        first = await client.post(receiver.url("/echo", host="rebind.example.com"), b"1")
        again = await client.post(receiver.url("/echo", host="rebind.example.com"), b"2")
        assert dns.calls == ["rebind.example.com"]  # one lookup; the socket got an IP literal
        assert first.remote_address == again.remote_address == "127.0.0.1"
        assert json.loads(first.body_prefix) == {"host": f"rebind.example.com:{receiver.port}"}
        # the receiver closes the connection: the next request needs a new one, which looks
        # the name up again, gets the private answer, and is refused before connecting
        await client.post(receiver.url("/close", host="rebind.example.com"), b"3")
        with pytest.raises(UnsafeUrl, match=r"resolves to 10\.0\.0\.1, a private"):
            await client.post(receiver.url("/echo", host="rebind.example.com"), b"4")
    assert dns.calls == ["rebind.example.com", "rebind.example.com"]
    assert [s.body for s in receiver.seen] == [b"1", b"2", b"3"]


async def test_a_public_then_private_answer_is_refused_as_a_whole(
    receiver: Receiver, dns: ScriptedDNS
) -> None:
    policy = OutboundPolicy(allow_networks=frozenset({ip_network("127.0.0.1/32")}))

    def both(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        dns.calls.append(str(host))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port))),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", int(port))),
        ]

    async with OutboundClient(policy, getaddrinfo=both) as client:
        with pytest.raises(UnsafeUrl, match="metadata"):
            await client.post(receiver.url("/ok", host="two.example.com"), b"{}")
    assert receiver.seen == []


async def test_a_name_that_does_not_resolve_is_host_not_found(dns: ScriptedDNS) -> None:
    async with OutboundClient() as client:
        with pytest.raises(HostNotFound) as caught:
            await client.post("https://nowhere.example.com/hook", b"{}")
    assert classify(caught.value).verdict is Verdict.RETRY


# --- redirects, size caps, timeouts ----------------------------------------------------------


async def test_a_redirect_to_an_internal_url_is_not_followed(receiver: Receiver) -> None:
    async with OutboundClient(LOOPBACK) as client:
        response = await client.post(receiver.url("/redirect"), b"{}")
        metadata = await client.post(receiver.url("/redirect-metadata"), b"{}")
    assert response.status == 302
    assert response.location == f"http://127.0.0.1:{receiver.port}/internal"
    assert metadata.status == 301
    assert receiver.paths() == ["/redirect", "/redirect-metadata"]  # /internal never reached
    outcome = classify(response)
    assert outcome.verdict is Verdict.PERMANENT
    assert "redirects are not followed" in outcome.reason


async def test_the_response_body_is_capped(receiver: Receiver) -> None:
    async with OutboundClient(LOOPBACK, max_body_bytes=1024) as client:
        response = await client.post(receiver.url("/big"), b"{}")
        small = await client.post(receiver.url("/echo"), b"{}")
    assert response.status == 200
    assert response.body_prefix == b"x" * 1024
    assert response.truncated
    assert not small.truncated


async def test_a_slow_receiver_hits_the_read_timeout(receiver: Receiver) -> None:
    timeouts = OutboundTimeouts(read=0.2, total=5.0)
    async with OutboundClient(LOOPBACK, timeouts=timeouts) as client:
        started = time.monotonic()
        with pytest.raises(OutboundTimeout) as caught:
            await client.post(receiver.url("/slow"), b"{}")
    assert caught.value.phase == "read"
    assert time.monotonic() - started < 0.9
    assert classify(caught.value).verdict is Verdict.RETRY


async def test_the_total_timeout_bounds_the_whole_request(receiver: Receiver) -> None:
    timeouts = OutboundTimeouts(read=5.0, total=0.25)
    async with OutboundClient(LOOPBACK, timeouts=timeouts) as client:
        with pytest.raises(OutboundTimeout) as caught:
            await client.post(receiver.url("/slow"), b"{}")
    assert caught.value.phase == "total"


async def test_a_closed_port_is_a_retryable_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OutboundClient(LOOPBACK) as client:
        with pytest.raises(OutboundConnectError) as caught:
            await client.post(f"http://127.0.0.1:{port}/", b"{}")
    assert classify(caught.value).verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (503, Verdict.RETRY),
        (429, Verdict.RETRY),
        (410, Verdict.PERMANENT),
        (400, Verdict.PERMANENT),
    ],
)
async def test_statuses_classify_and_retry_after_is_read(
    receiver: Receiver, status: int, verdict: Verdict
) -> None:
    async with OutboundClient(LOOPBACK) as client:
        response = await client.post(receiver.url(f"/status/{status}"), b"{}")
    assert response.status == status
    assert classify(response).verdict is verdict
    assert response.body_prefix == b"failed"
    wait = retry_after_from_headers(response.headers, datetime.now(UTC))
    assert wait == timedelta(seconds=30)


async def test_framing_headers_belong_to_the_client(receiver: Receiver) -> None:
    async with OutboundClient(LOOPBACK) as client:
        for name in ("Host", "content-length", "Transfer-Encoding", "Connection", "Proxy-X"):
            with pytest.raises(ValidationError):
                await client.post(receiver.url("/ok"), b"{}", {name: "x"})
        with pytest.raises(ValidationError):
            await client.post(receiver.url("/ok"), b"{}", {"X-Bad": "a\r\nInjected: 1"})
    assert receiver.seen == []


async def test_other_methods_and_a_custom_user_agent(receiver: Receiver) -> None:
    async with OutboundClient(LOOPBACK, user_agent="Test/1") as client:
        response = await client.request("DELETE", receiver.url("/ok"), b'{"x": 1}')
    assert response.status == 204
    assert receiver.seen[0].method == "DELETE"
    assert receiver.seen[0].headers["user-agent"] == "Test/1"


# --- signed deliveries -------------------------------------------------------------------------


async def test_a_signed_delivery_verifies_at_the_receiver_across_retries(
    receiver: Receiver,
) -> None:
    secret = new_secret()
    body = json.dumps({"type": "segment.entered", "profile": "p1"}).encode()
    async with OutboundClient(LOOPBACK) as client:
        for path in ("/status/503", "/ok"):  # a failed attempt, then its retry
            headers = sign(secret, "msg_42", int(time.time()), body)
            await client.post(
                receiver.url(path), body, {**headers, "Content-Type": "application/json"}
            )
    first, retry = receiver.seen
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] == "msg_42"
    for seen in (first, retry):
        Webhook(secret).verify(seen.body, seen.headers)


# --- TLS: SNI and certificate checks use the host name, the socket uses the checked IP -----------


async def test_https_uses_the_name_for_sni_and_verification_while_pinned_to_the_ip(
    tls_receiver: Receiver, tls_ca: trustme.CA, dns: ScriptedDNS
) -> None:
    dns.answers["receiver.test"] = ["127.0.0.1"]
    dns.answers["other.test"] = ["127.0.0.1"]
    policy = OutboundPolicy(allow_hosts=frozenset({"receiver.test", "other.test"}))
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    async with OutboundClient(policy, ssl_context=context) as client:
        response = await client.post(tls_receiver.url("/echo", host="receiver.test"), b"{}")
        assert response.status == 200
        assert response.remote_address == "127.0.0.1"
        assert json.loads(response.body_prefix) == {"host": f"receiver.test:{tls_receiver.port}"}
        assert tls_receiver.sni == ["receiver.test"]
        # same IP, but the certificate is not for other.test: verification is by name
        with pytest.raises(OutboundConnectError):
            await client.post(tls_receiver.url("/echo", host="other.test"), b"{}")
    assert dns.calls == ["receiver.test", "other.test"]
    assert tls_receiver.paths() == ["/echo"]
