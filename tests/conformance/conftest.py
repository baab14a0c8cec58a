"""Fixtures of the conformance tests: real services, one fresh namespace per test.

A service that is not running skips its tests with the reason, except under ``CI=true``,
where it fails them (``require_service``: use it for every service, Redis and NATS too).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get(
    "RELEVO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when CI (``CI=true``) must run everything."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: every service must be there)", pytrace=False)
    pytest.skip(reason)


def require_service(name: str, host: str, port: int, *, timeout: float = 1.0) -> None:
    """Go on only if something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        unavailable(f"{name} is not reachable at {host}:{port} ({exc})")


def require_module(name: str, extra: str) -> None:
    """Go on only if a backend's driver is installed."""
    try:
        __import__(name)
    except ImportError:
        unavailable(f"{name} is not installed (pip install 'relevo[{extra}]')")


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A libpq URL whose connections use a schema of their own, dropped afterwards."""
    parts = urlsplit(POSTGRES_URL)
    require_module("psycopg", "postgres")
    require_service("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)
    import psycopg

    schema = f"relevo_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_query(POSTGRES_URL, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
