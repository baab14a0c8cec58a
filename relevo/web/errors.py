"""Errors to HTTP responses, in one place: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from relevo.errors import (
    AuthError,
    Conflict,
    ErrorDetail,
    Forbidden,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RelevoError,
    ValidationError,
)
from relevo.web.json import JSONResponse

log = logging.getLogger(__name__)

STATUS: list[tuple[type[RelevoError], int]] = [
    (PayloadTooLarge, 413),
    (ValidationError, 400),
    (Forbidden, 403),
    (AuthError, 401),
    (NotFound, 404),
    (Conflict, 409),
    (Overloaded, 429),
]


def error_body(code: str, message: str, details: list[ErrorDetail] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": [d.as_dict() for d in details or []],
        }
    }


def error_response(exc: RelevoError) -> Response:
    status = next((s for cls, s in STATUS if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, AuthError) and not isinstance(exc, Forbidden):
        headers["WWW-Authenticate"] = 'Basic realm="relevo"'
    if status == 500:
        log.error("unmapped error: %s", exc)
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status, headers=headers)


async def relevo_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelevoError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal error"), 500)
