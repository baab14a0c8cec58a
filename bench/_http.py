"""Two HTTP/1.1 keep-alive clients for the benchmarks, behind one small interface.

``RawClient`` writes pre-encoded requests on asyncio streams and parses just enough of the
answer (status line, ``Content-Length`` or chunked body, ``Connection: close``): it costs the
load generator a few microseconds a request. ``HttpxClient`` sends the same requests through
``httpx.AsyncClient``, for comparison. Both keep at most ``connections`` sockets open and talk
only to the host and port they were built for.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

ClientKind = Literal["raw", "httpx"]
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNKS = 100_000


@dataclass(frozen=True)
class Request:
    """One request, also kept pre-encoded (``wire``) so sending it costs a socket write."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    wire: bytes = field(repr=False)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    retry_after: float | None = None


class Client(Protocol):
    async def send(self, request: Request) -> Reply: ...

    async def aclose(self) -> None: ...


def basic_auth(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


def build_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
) -> Request:
    """A request with ``Host`` and, for a body, ``Content-Type`` and ``Content-Length``."""
    all_headers: list[tuple[str, str]] = [("Host", f"{host}:{port}"), *headers]
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers)
    wire = head.encode("latin-1") + b"\r\n" + body
    return Request(method, path, tuple(headers), body, wire)


class ProtocolError(Exception):
    """The server's answer was not HTTP/1.1 as this client reads it."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False

    async def exchange(self, request: Request) -> tuple[Reply, bool]:
        """Send and read the answer; returns it and whether the socket may be reused."""
        self.writer.write(request.wire)
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.used = True
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length = -1
        chunked, keep = False, True
        retry_after: float | None = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                keep = "close" not in value.lower()
            elif name == "retry-after":
                retry_after = float(value)
        if chunked:
            body = await self._read_chunked()
        elif length >= 0:
            body = await self.reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            body, keep = await self.reader.read(), False
        return Reply(status, body, retry_after), keep

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        for _ in range(MAX_CHUNKS):
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        raise ProtocolError("too many chunks")

    def close(self) -> None:
        self.writer.close()


class RawClient:
    """Pre-encoded requests over at most ``connections`` keep-alive sockets."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self._host = host
        self._port = port
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port, limit=MAX_HEAD_BYTES)
        return _Connection(reader, writer)

    async def send(self, request: Request) -> Reply:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._open()
            try:
                reply, keep = await conn.exchange(request)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                conn.close()
                # a kept-alive socket the server closed while idle: retry once on a new one
                stale = isinstance(exc, ConnectionError) or not exc.partial
                if not (conn.used and stale):
                    raise
                conn = await self._open()
                reply, keep = await conn.exchange(request)
            except BaseException:
                conn.close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
            return reply

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class HttpxClient:
    """The same requests through ``httpx.AsyncClient`` (HTTP/1.1, keep-alive pool)."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}", limits=limits, timeout=60.0
        )

    async def send(self, request: Request) -> Reply:
        response = await self._client.request(
            request.method,
            request.path,
            content=request.body or None,
            headers=dict(request.headers),
        )
        raw_retry = response.headers.get("retry-after")
        return Reply(
            response.status_code, response.content, float(raw_retry) if raw_retry else None
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def make_client(kind: ClientKind, host: str, port: int, connections: int) -> Client:
    if kind == "raw":
        return RawClient(host, port, connections)
    return HttpxClient(host, port, connections)
