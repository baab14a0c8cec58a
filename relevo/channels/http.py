"""The outbound HTTP client of destinations: SSRF-checked, pinned to checked IPs, no redirects.

``OutboundClient`` sends one request and reads at most ``max_body_bytes`` of the answer:

1. ``check_url`` judges the URL (scheme, host, literal addresses) before anything else.
2. When a connection is needed, ``PinnedNetworkBackend`` resolves the host once with
   ``getaddrinfo``, refuses unless every address is allowed (``resolve_and_check``), and opens the
   TCP connection to one of those checked IP addresses. The name is never resolved again for that
   connection, so a DNS answer that changes between check and connect (rebinding) cannot steer
   it. TLS still uses the URL's host name for SNI and certificate verification, and the ``Host``
   header carries the URL's host.
3. Redirects are never followed: a 3xx comes back as a response like any other (the retry
   policy treats it as a permanent failure).
4. Connect, read, write and pool time limits apply per phase, and ``total`` bounds the whole
   request, DNS included. No ``Accept-Encoding`` is offered, so the body prefix is what the peer
   sent, not a decompression bomb.

It is built on ``httpcore``, the connection layer under ``httpx``, rather than on
``httpx.AsyncClient``: the client's extras are exactly what an SSRF-safe sender must not have
(redirect following, proxies taken from the environment, cookies, transparent decompression),
and the network backend hook is where the connection is pinned to the checked address.

``OutboundResponse.body_prefix`` is for logs and the failed-events store. Never echo it to API
callers (for example in a "test destination" answer): that would turn the sender into a reader of
internal services.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import httpcore

from relevo.channels.errors import (
    OutboundConnectError,
    OutboundNetworkError,
    OutboundTimeout,
)
from relevo.channels.ssrf import (
    DEFAULT_POLICY,
    CheckedUrl,
    GetAddrInfo,
    OutboundPolicy,
    check_url,
    resolve_and_check,
)
from relevo.errors import ValidationError

__all__ = [
    "DEFAULT_USER_AGENT",
    "OutboundClient",
    "OutboundResponse",
    "OutboundTimeouts",
    "PinnedNetworkBackend",
]

DEFAULT_USER_AGENT = "Relevo-Webhooks/1"
# set by the client from the checked URL and the body; a caller may not override them
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "accept-encoding",
        "proxy-authorization",
        "proxy-connection",
    }
)


@dataclass(frozen=True)
class OutboundTimeouts:
    """Time limits in seconds: per phase, and ``total`` for the whole request (DNS included)."""

    connect: float = 5.0
    read: float = 10.0
    write: float = 10.0
    pool: float = 5.0
    total: float = 30.0

    def as_extension(self) -> dict[str, float]:
        return {"connect": self.connect, "read": self.read, "write": self.write, "pool": self.pool}


@dataclass(frozen=True)
class OutboundResponse:
    """What came back: the status, headers (lower-case names), at most N bytes of body.

    Attributes:
        status: the HTTP status; 3xx means a redirect that was NOT followed.
        headers: lower-case names; repeated headers joined with ``", "``.
        body_prefix: the first ``max_body_bytes`` of the body, for logs; never show it to
            API callers.
        truncated: the body was longer than ``body_prefix``.
        elapsed: seconds from the start of the request to the end of reading.
        remote_address: the IP address the connection went to.
    """

    status: int
    headers: Mapping[str, str]
    body_prefix: bytes
    truncated: bool
    elapsed: float
    remote_address: str | None = None

    @property
    def location(self) -> str | None:
        """The ``Location`` of a redirect (reported, never followed)."""
        return self.headers.get("location")

    def summary(self) -> str:
        """A one-line description with no body: safe to show anywhere."""
        return f"HTTP {self.status} in {self.elapsed * 1000:.0f} ms"


class PinnedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses ``resolve_and_check`` passed.

    Each new connection resolves its host exactly once (in a worker thread, within the connect
    time limit), checks every address, and connects to the first checked address that accepts,
    by IP literal, so the inner backend performs no lookup of its own.

    Args:
        policy: the operator's allowlist.
        getaddrinfo: the resolver (``socket.getaddrinfo`` by default, looked up at call time).
        inner: the backend that opens sockets; ``httpcore.AnyIOBackend`` by default.
    """

    def __init__(
        self,
        policy: OutboundPolicy = DEFAULT_POLICY,
        *,
        getaddrinfo: GetAddrInfo | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._getaddrinfo = getaddrinfo
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        resolve = partial(
            resolve_and_check, host, port, self._policy, getaddrinfo=self._getaddrinfo
        )
        try:
            with anyio.fail_after(timeout):
                addresses = await anyio.to_thread.run_sync(resolve, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} took too long") from exc
        failures: list[Exception] = []
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failures.append(exc)
        raise failures[-1]

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("outbound requests never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_TIMEOUTS: dict[type[Exception], str] = {
    httpcore.ConnectTimeout: "connect",
    httpcore.ReadTimeout: "read",
    httpcore.WriteTimeout: "write",
    httpcore.PoolTimeout: "pool",
}


def _translate(exc: Exception, checked: CheckedUrl) -> Exception:
    where = f"{checked.scheme}://{checked.host_header}"
    for kind, phase in _TIMEOUTS.items():
        if isinstance(exc, kind):
            return OutboundTimeout(f"{phase} timeout sending to {where}", phase=phase)
    if isinstance(exc, httpcore.ConnectError):
        return OutboundConnectError(f"could not connect to {where}: {exc}")
    if isinstance(exc, httpcore.LocalProtocolError):
        return ValidationError(f"the request to {where} is not valid HTTP: {exc}")
    return OutboundNetworkError(f"the exchange with {where} failed: {exc or type(exc).__name__}")


def _remote_address(response: httpcore.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    address: Any = stream.get_extra_info("server_addr") if stream is not None else None
    return str(address[0]) if address else None


class OutboundClient:
    """Sends requests to destinations safely; one per event loop, closed with ``aclose``.

    Args:
        policy: the operator's allowlist (``OutboundPolicy()`` admits only public addresses).
        timeouts: per-phase and total time limits.
        max_body_bytes: how much of a response body to read; the rest is not read at all.
        ssl_context: TLS settings (certifi's trust store by default).
        getaddrinfo: the resolver, for tests (``socket.getaddrinfo`` by default).
        max_connections: the size of the connection pool.
        user_agent: the ``User-Agent`` unless a request sets its own.
    """

    def __init__(
        self,
        policy: OutboundPolicy = DEFAULT_POLICY,
        *,
        timeouts: OutboundTimeouts | None = None,
        max_body_bytes: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        getaddrinfo: GetAddrInfo | None = None,
        max_connections: int = 50,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        self.policy = policy
        self.timeouts = timeouts or OutboundTimeouts()
        self.max_body_bytes = max_body_bytes
        self._user_agent = user_agent
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            keepalive_expiry=30.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=PinnedNetworkBackend(policy, getaddrinfo=getaddrinfo),
        )

    async def post(
        self,
        url: str | CheckedUrl,
        content: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> OutboundResponse:
        """POST ``content`` to ``url``; see ``request``."""
        return await self.request("POST", url, content, headers)

    async def request(
        self,
        method: str,
        url: str | CheckedUrl,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> OutboundResponse:
        """Send one request and read at most ``max_body_bytes`` of the response.

        The URL is checked again here even when it is a ``CheckedUrl`` (the policy may have
        changed since it was saved). A 3xx is returned, not followed.

        Args:
            method: the HTTP method (``POST``, ``DELETE``, ...).
            url: the destination URL.
            content: the exact body bytes (what a signature was computed over).
            headers: extra headers; ``Host``, ``Content-Length``, ``Connection`` and the other
                framing headers are set by the client and may not be given.

        Returns:
            The response, whatever its status.

        Raises:
            UnsafeUrl: the URL or an address its host resolves to is refused (permanent).
            ValidationError: a header the client owns, or a request that is not valid HTTP.
            HostNotFound: the name did not resolve.
            OutboundTimeout: a time limit ran out (``phase`` says which).
            OutboundConnectError: no connection could be opened.
            OutboundNetworkError: the connection broke or the peer sent broken HTTP.
        """
        checked = check_url(url if isinstance(url, str) else url.url, self.policy)
        request_headers = self._headers(checked, headers or {})
        target = httpcore.URL(
            scheme=checked.scheme.encode("ascii"),
            host=checked.host.encode("ascii"),
            port=checked.port,
            target=checked.target.encode("ascii"),
        )
        extensions: dict[str, Any] = {"timeout": self.timeouts.as_extension()}
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeouts.total):
                async with self._pool.stream(
                    method.upper(),
                    target,
                    headers=request_headers,
                    content=content,
                    extensions=extensions,
                ) as response:
                    body, truncated = await self._read_prefix(response)
                    remote = _remote_address(response)
        except TimeoutError as exc:
            where = f"{checked.scheme}://{checked.host_header}"
            raise OutboundTimeout(
                f"no complete answer from {where} within {self.timeouts.total} s", phase="total"
            ) from exc
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _translate(exc, checked) from exc
        return OutboundResponse(
            status=response.status,
            headers=_header_map(response.headers),
            body_prefix=body,
            truncated=truncated,
            elapsed=time.perf_counter() - started,
            remote_address=remote,
        )

    def _headers(
        self, checked: CheckedUrl, headers: Mapping[str, str]
    ) -> list[tuple[bytes, bytes]]:
        reserved = sorted(name for name in headers if name.lower() in RESERVED_HEADERS)
        if reserved or any(name.lower().startswith("proxy-") for name in headers):
            raise ValidationError(
                f"headers set by the outbound client may not be given: {reserved}"
            )
        out = [(b"Host", checked.host_header.encode("ascii")), (b"Accept-Encoding", b"identity")]
        if not any(name.lower() == "user-agent" for name in headers):
            out.append((b"User-Agent", self._user_agent.encode("ascii")))
        try:
            out += [(k.encode("ascii"), v.encode("latin-1")) for k, v in headers.items()]
        except UnicodeEncodeError as exc:
            raise ValidationError(f"a header name or value cannot be encoded: {exc}") from exc
        return out

    async def _read_prefix(self, response: httpcore.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes:
                # stop reading: the connection is closed rather than drained
                return b"".join(chunks)[: self.max_body_bytes], True
        return b"".join(chunks), False

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()

    async def __aenter__(self) -> OutboundClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers
