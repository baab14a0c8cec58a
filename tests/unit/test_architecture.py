"""The one-way import rule: domain packages know no web framework, driver or adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "relevo"

# pure domain modules: the event model, identity, profile state and computed traits, the rule
# language, segment definitions, and the outbound building blocks other than the HTTP client
PURE = [
    *sorted((PACKAGE / "events").glob("*.py")),
    *sorted((PACKAGE / "rules").glob("*.py")),
    *(
        PACKAGE / "profiles" / name
        for name in (
            "identifiers.py",
            "identity.py",
            "model.py",
            "state.py",
            "suppression.py",
            "computed.py",
            "computed_defs.py",
            "computed_kinds.py",
            "computed_state.py",
        )
    ),
    *(PACKAGE / "segments" / name for name in ("model.py", "index.py", "engine.py")),
    *sorted((PACKAGE / "learning").glob("*.py")),
    *sorted((PACKAGE / "content").glob("*.py")),
    *(
        PACKAGE / "decisions" / name
        for name in (
            "log.py",
            "caps.py",
            "catalog.py",
            "engine.py",
            "experiments.py",
            "feedback.py",
            "identity.py",
            "evaluate.py",
        )
    ),
    *(
        PACKAGE / "channels" / name
        for name in ("errors.py", "ssrf.py", "signing.py", "retry.py", "audiences.py")
    ),
]
FORBIDDEN = (
    "starlette", "uvicorn", "click", "httpx", "httpcore", "asyncio", "sqlite3", "psycopg",
    "redis", "nats", "prometheus_client", "anyio", "relevo.web", "relevo.cli", "relevo.store",
    "relevo.stream", "relevo.pipeline", "relevo.collect", "relevo.channels.http",
)  # fmt: skip


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_domain_modules_import_no_adapter(path: Path) -> None:
    bad = {
        name
        for name in imports_of(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_the_web_package_knows_status_codes() -> None:
    # the CLI and the test helpers are HTTP clients, so they may read a response's status
    for path in PACKAGE.rglob("*.py"):
        if {"web", "cli", "testing"} & set(path.relative_to(PACKAGE).parts):
            continue
        assert "status_code" not in path.read_text(), path


def test_only_the_web_layer_and_the_cli_import_the_web_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        if {"web", "cli"} & set(path.relative_to(PACKAGE).parts):
            continue
        bad = {m for m in imports_of(path) if m == "relevo.web" or m.startswith("relevo.web.")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
