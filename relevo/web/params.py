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
