"""The channels' pure modules stay pure: only ``http`` touches sockets and HTTP libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CHANNELS = Path(__file__).resolve().parents[2] / "relevo" / "channels"
PURE = ["errors.py", "ssrf.py", "signing.py", "retry.py", "audiences.py"]
FORBIDDEN = (
    "httpx",
    "httpcore",
    "anyio",
    "asyncio",
    "starlette",
    "uvicorn",
    "click",
    "sqlite3",
    "psycopg",
    "redis",
    "nats",
    "relevo.web",
    "relevo.cli",
    "relevo.store",
    "relevo.stream",
    "relevo.pipeline",
    "relevo.collect",
    "relevo.channels.http",
)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", PURE)
def test_pure_channel_modules_import_no_io_library(name: str) -> None:
    bad = {
        module
        for module in imports_of(CHANNELS / name)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"channels/{name} imports {sorted(bad)}"


def test_no_channel_module_knows_the_web_layer() -> None:
    for path in CHANNELS.glob("*.py"):
        assert not any(m.startswith("relevo.web") for m in imports_of(path)), path.name
