"""Options every command shares, and the settings they build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import pydantic

from relevo.config import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def store_option(command: F) -> F:
    return click.option(
        "--store-url",
        envvar="RELEVO_STORE_URL",
        default=None,
        help="State store URL (default sqlite:///./relevo.db).",
    )(command)


def settings_from(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except pydantic.ValidationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc
