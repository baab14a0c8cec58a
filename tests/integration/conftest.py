"""Shared helpers for the end-to-end tests that drive a real ``relevo serve`` process.

The fixtures are prefixed ``e2e_`` so they never shadow fixtures other test files define.
A test module may set ``E2E_SERVER_ENV = {"RELEVO_...": "..."}`` to configure its server.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from relevo.testing.server import RelevoServer

T = TypeVar("T")

LOG_FILE = "relevo-events.db"  # the embedded log beside relevo.db (RELEVO_STREAM_URL=embedded://)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
        last = predicate()
    return last


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Node:
    """A running ``relevo serve`` with one key of each kind and an HTTP client to it."""

    server: RelevoServer
    directory: Path
    write_key: str
    server_key: str
    admin_key: str
    http: httpx.Client

    wait_until = staticmethod(wait_until)
    bearer = staticmethod(bearer)
    basic_auth = staticmethod(basic_auth)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE

    # -- collect ------------------------------------------------------------------------------

    def post(self, path: str, body: Any, *, write_key: str | None = None) -> httpx.Response:
        return self.http.post(
            path,
            content=json.dumps(body).encode(),
            headers={
                "Authorization": basic_auth(write_key or self.write_key),
                "Content-Type": "application/json",
            },
        )

    def batch(self, events: list[dict[str, Any]], **envelope: Any) -> httpx.Response:
        return self.post("/v1/batch", {"batch": events, **envelope})

    # -- profiles -----------------------------------------------------------------------------

    def get_profile(self, ref: str, key: str | None = None) -> httpx.Response:
        return self.http.get(f"/v1/profiles/{quote(ref, safe=':@')}", headers=self._auth(key))

    def profile(self, ref: str) -> dict[str, Any]:
        response = self.get_profile(ref)
        assert response.status_code == 200, (ref, response.status_code, response.text)
        found: dict[str, Any] = response.json()
        return found

    def get_events(
        self, ref: str, *, limit: int = 200, cursor: str | None = None
    ) -> httpx.Response:
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self.http.get(
            f"/v1/profiles/{quote(ref, safe=':@')}/events", params=params, headers=self._auth()
        )

    def timeline(self, ref: str) -> list[dict[str, Any]]:
        """Every event of the profile's timeline, following the cursor to the end."""
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            response = self.get_events(ref, cursor=cursor)
            assert response.status_code == 200, (ref, response.status_code, response.text)
            page = response.json()
            events.extend(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return events

    def delete_profile(self, ref: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.delete(
            f"/v1/profiles/{quote(ref, safe=':@')}",
            headers=headers if headers is not None else bearer(self.admin_key),
        )

    def _auth(self, key: str | None = None) -> dict[str, str]:
        return bearer(key or self.server_key)

    # -- operations ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name, summed over their labels."""
        response = self.http.get("/metrics")
        response.raise_for_status()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_processed(self, timeout: float = 20.0) -> None:
        """Wait until the processor has applied everything in the log (lag 0).

        Collect acknowledges only after the append is durable and the log's end offsets moved,
        so once the lag reads 0 every acknowledged event has been applied and committed.
        """
        wait_until(
            lambda: self.metric("relevo_processing_lag_events") == 0,
            timeout,
            "relevo_processing_lag_events to reach 0",
        )

    def kill(self) -> None:
        self.server.kill()

    def start(self) -> None:
        self.server.start()

    # -- the event log file ---------------------------------------------------------------------

    def log_events(self) -> list[dict[str, Any]]:
        """Every event stored in the embedded log's SQLite file (works with the server down)."""
        uri = f"file:{self.log_path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute("SELECT payload FROM log ORDER BY seq").fetchall()
        return [json.loads(bytes(row[0])) for row in rows]

    def log_message_ids(self) -> list[str]:
        return [event["messageId"] for event in self.log_events()]


def start_node(directory: Path, env: dict[str, str] | None = None) -> Node:
    # no ambient relevo.toml: the server reads only what the test sets
    server = RelevoServer(
        directory, env={"RELEVO_CONFIG": str(directory / "none.toml"), **(env or {})}
    )
    write_key = server.create_key("write")
    server_key = server.create_key("server")
    admin_key = server.create_key("admin")
    server.start()
    return Node(
        server=server,
        directory=directory,
        write_key=write_key,
        server_key=server_key,
        admin_key=admin_key,
        http=httpx.Client(base_url=server.url, timeout=30),
    )


@pytest.fixture(scope="module")
def e2e_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """One server for the whole test module (tests keep apart by using unique ids).

    ``E2E_DEFINITIONS = {"segments/vips.yaml": {...}}`` in the module: definition files (as
    YAML) the server loads at start."""
    env: dict[str, str] = dict(getattr(request.module, "E2E_SERVER_ENV", {}))
    directory = tmp_path_factory.mktemp("relevo-e2e")
    definitions: dict[str, Any] = getattr(request.module, "E2E_DEFINITIONS", {})
    for name, content in definitions.items():
        path = directory / "definitions" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content))
    if definitions:
        env["RELEVO_DEFINITIONS_DIR"] = str(directory / "definitions")
    node = start_node(directory, env)
    try:
        yield node
    finally:
        node.http.close()
        node.server.stop()


@pytest.fixture
def e2e_uid() -> str:
    """A short unique id, so tests sharing a server never share a person."""
    return uuid.uuid4().hex[:12]
