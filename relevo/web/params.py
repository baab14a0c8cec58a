"""Reading what a request carries besides collected events: a JSON body, a page size."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from relevo.errors import ValidationError

T = TypeVar("T")


async def json_body(request: Request, shape: type[T] | None = None) -> T | Any:
    """The body decoded as JSON (into ``shape`` when given); 400 when it is not."""
    body = await request.body()
    try:
        if shape is None:
            return msgspec.json.decode(body)
        return msgspec.json.decode(body or b"{}", type=shape)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ValidationError(f"invalid request body: {exc}") from exc


def page_limit(request: Request, *, default: int, most: int) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ValidationError(f"limit must be a whole number from 1 to {most}")
    return int(raw)


MAX_ID = 2**63 - 1  # the largest integer SQLite (and most stores) can hold


def query_id(request: Request, name: str, default: int = 0) -> int:
    """A non-negative integer id from the query string (a cursor such as ``after``)."""
    raw = request.query_params.get(name, str(default))
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise ValidationError(f"{name} must be a whole number from 0 to {MAX_ID}")
    return int(raw)
