"""Shared fixtures: settings on a temporary store, built services, keys and an in-process client.

Everything opened here is closed here (``filterwarnings = error`` turns an unclosed SQLite
connection into a failure).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from relevo._clock import ManualClock
from relevo.config import Settings
from relevo.services import Services, build_services
from relevo.web.app import create_app


@pytest.fixture
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read RELEVO_* variables and a relevo.toml: keep both out of the tests."""
    for name in list(os.environ):
        if name.startswith("RELEVO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RELEVO_CONFIG", str(tmp_path / "no-such-relevo.toml"))


@pytest.fixture
def make_settings(tmp_path: Path, no_ambient_config: None) -> Callable[..., Settings]:
    """Settings on a store in ``tmp_path``, with overrides (``max_pending_events=0`` ...)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"store_url": f"sqlite:///{tmp_path / 'relevo.db'}"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def services(settings: Settings, clock: ManualClock) -> Iterator[Services]:
    built = build_services(settings, clock)
    try:
        yield built
    finally:
        built.close()  # idempotent: the app's lifespan may have closed them already


@dataclass(frozen=True)
class Keys:
    write: str
    server: str
    admin: str


@pytest.fixture
def keys(services: Services) -> Keys:
    return Keys(
        write=services.keys.create("write").secret,
        server=services.keys.create("server").secret,
        admin=services.keys.create("admin").secret,
    )


@pytest.fixture
def app(services: Services) -> Starlette:
    return create_app(services=services)


@pytest.fixture
async def app_client(app: Starlette, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """In-process HTTP to ``app`` with its lifespan running (log writer and processor started).

    httpx's ASGI transport rather than Starlette's TestClient, which warns (an error here)
    when it runs on ``httpx`` instead of ``httpx2``.
    """
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield client


Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def eventually() -> Eventually:
    """Poll ``condition`` (without blocking the event loop) until it holds, or fail."""

    async def wait(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
            await asyncio.sleep(0.005)

    return wait
