"""Tests that need a real server (PostgreSQL, Redis, NATS) go on only if it is there."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest


def require_server(name: str, url: str, default_port: int) -> None:
    """Go on only if something accepts connections at ``url``'s address: skip otherwise,
    except under ``CI=true``, where the test fails."""
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: every service must be there)", pytrace=False)
    pytest.skip(reason)
