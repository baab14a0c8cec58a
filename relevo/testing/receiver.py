"""A real HTTP receiver on 127.0.0.1 that records what destinations send it.

For tests and benchmarks of webhook and audience deliveries:

    with WebhookReceiver() as receiver:
        url = receiver.url("/hook")          # admit 127.0.0.1 in the outbound allowlist
        receiver.respond = always(503)       # or script([...]), or a function of the request
        receiver.go_down()                   # the port is closed, open connections are cut
        receiver.come_back()                 # the same port answers again
        receiver.wait_for(lambda seen: len(seen) >= 3)

Each request is recorded with the ``time.monotonic()`` of its arrival (its body read), so a test
can measure from a 2xx it got to the webhook that followed. Delays are interruptible: stopping or
going down never waits for a sleeping handler.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Answer", "Received", "WebhookReceiver", "always", "script"]

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Answer:
    """What the receiver answers: a status, headers, and how long it waits before answering."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as it arrived (header names lower-case) and what it was answered.

    Recorded once answered (or cut off): a request still waiting out a delay is counted in
    ``WebhookReceiver.arrivals`` but is not in ``seen()`` yet.
    """

    at: float  # time.monotonic() once its body was read
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # the status answered (0: the connection was cut before an answer)

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Received], Answer]


def always(status: int = 200, delay: float = 0.0, **headers: str) -> Responder:
    """Answer every request the same way (``retry_after="2"`` sends ``Retry-After: 2``)."""
    answer = Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, delay)
    return lambda request: answer


def script(answers: Iterable[Answer], then: Responder | None = None) -> Responder:
    """Answer the first requests with ``answers`` in turn, the rest with ``then`` (200)."""
    pending = list(answers)
    lock = threading.Lock()
    rest = then or always(200)

    def respond(request: Received) -> Answer:
        with lock:
            if pending:
                return pending.pop(0)
        return rest(request)

    return respond


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        arrived = Received(
            time.monotonic(),
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            0,
        )
        receiver.arrived()
        answer = receiver.respond(arrived)
        if answer.delay and receiver.interrupted(answer.delay):
            receiver.record(arrived)  # stopped or went down while waiting: no answer
            self.close_connection = True
            return
        receiver.record(
            Received(
                arrived.at,
                arrived.method,
                arrived.path,
                arrived.headers,
                arrived.body,
                answer.status,
            )
        )
        payload = b'{"ok":true}' if 200 <= answer.status < 300 else b'{"ok":false}'
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PUT = do_DELETE = do_GET = _handle


class _Server(ThreadingHTTPServer):
    receiver: WebhookReceiver
    daemon_threads = False
    block_on_close = True
    # socketserver's default backlog is 5: a burst of new connections overflows it, and a
    # dropped SYN is retried only after a second, which would look like a slow sender
    request_queue_size = 128

    def process_request(self, request: Any, client_address: Any) -> None:
        self.receiver.connection_opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.receiver.connection_closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a peer that went away, or a connection cut by go_down(): expected


class WebhookReceiver:
    """A threaded HTTP server on 127.0.0.1 recording every request; see the module docstring.

    Args:
        port: the port to listen on (a free one by default); kept across ``go_down``.
        respond: how to answer each request (200 by default).
    """

    def __init__(self, port: int = 0, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or always(200)
        self._port = port
        self._lock = threading.Lock()
        self._seen: list[Received] = []
        self._arrivals = 0
        self._connections: set[socket.socket] = set()
        self._down = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        if self._server is not None:
            return self
        server = _Server((HOST, self._port), _Handler)
        server.receiver = self
        self._port = int(server.server_address[1])
        self._down.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"webhook-receiver-{self._port}",
        )
        self._thread.start()
        return self

    def go_down(self) -> None:
        """Close the port and cut every open connection: senders get connection errors."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._down.set()
        self._server = self._thread = None
        server.shutdown()
        with self._lock:
            open_now = list(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins the handler threads (their delays were interrupted)
        if thread is not None:
            thread.join(10)

    def come_back(self) -> None:
        """Listen again, on the same port."""
        self.start()

    stop = go_down

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/hook", host: str = HOST) -> str:
        return f"http://{host}:{self._port}{path}"

    # -- what arrived ---------------------------------------------------------------------------

    def seen(self, path: str | None = None) -> list[Received]:
        """Every request so far (optionally only to ``path``), in arrival order."""
        with self._lock:
            found = list(self._seen)
        return [r for r in found if path is None or r.path == path]

    def delivered(self, path: str | None = None) -> list[Received]:
        """The requests answered 2xx."""
        return [r for r in self.seen(path) if r.ok]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._arrivals = 0

    def wait_for(
        self,
        predicate: Callable[[list[Received]], object],
        timeout: float = 10.0,
        what: str = "the receiver's condition",
    ) -> list[Received]:
        """Poll until ``predicate(self.seen())`` holds; raise ``TimeoutError`` at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.seen()
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.005)

    # -- used by the handler --------------------------------------------------------------------

    @property
    def arrivals(self) -> int:
        """Requests that arrived so far, those still being answered (delayed) included."""
        with self._lock:
            return self._arrivals

    def arrived(self) -> None:
        with self._lock:
            self._arrivals += 1

    def record(self, received: Received) -> None:
        with self._lock:
            self._seen.append(received)

    def interrupted(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True if the receiver went down (or stopped) meanwhile."""
        return self._down.wait(delay)

    def connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
