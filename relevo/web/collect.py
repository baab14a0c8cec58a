"""Collection endpoints, compatible with Segment's HTTP Tracking API and RudderStack's SDKs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.collect.service import CollectRequest, CollectResult, CollectService
from relevo.errors import RelevoError
from relevo.web.auth import basic_user
from relevo.web.body import read_body
from relevo.web.errors import error_response
from relevo.web.json import JSONResponse

ALLOWED_HEADERS = "authorization, content-type, anonymousid, sentat"

SINGLE: dict[str, str] = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
BATCH_PATHS = ("/v1/batch", "/v1/b", "/v1/import", "/beacon/v1/batch")


def cors_headers(request: Request) -> dict[str, str]:
    # write keys are public: any origin may send; a source may narrow this (checked on POST)
    origin = request.headers.get("origin")
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}


async def preflight(request: Request) -> Response:
    headers = cors_headers(request) or {"Access-Control-Allow-Origin": "*"}
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "86400",
        }
    )
    return Response(status_code=204, headers=headers)


def _report(result: CollectResult) -> dict[str, Any]:
    body: dict[str, Any] = {
        "success": True,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
    }
    if result.rejected:
        body["rejected"] = [d.as_dict() for d in result.rejected]
    return body


def _endpoint(implied_type: str | None) -> Any:
    async def collect(request: Request) -> Response:
        services = request.app.state.services
        service: CollectService = services.collect
        cors = cors_headers(request)
        try:
            body = await read_body(request, services.settings.max_request_bytes)
            result = await service.collect(
                CollectRequest(
                    body=body,
                    implied_type=implied_type,
                    basic_user=basic_user(request),
                    query_write_key=request.query_params.get("writeKey"),
                    origin=request.headers.get("origin"),
                )
            )
        except RelevoError as exc:
            response = error_response(exc)
            response.headers.update(cors)
            return response
        return JSONResponse(_report(result), headers=cors)

    collect.__name__ = f"collect_{implied_type or 'batch'}"
    return collect


def routes() -> list[Route]:
    found = [
        Route(f"/v1/{name}", _endpoint(event_type), methods=["POST"])
        for name, event_type in SINGLE.items()
    ]
    found += [Route(path, _endpoint(None), methods=["POST"]) for path in BATCH_PATHS]
    paths = [f"/v1/{name}" for name in SINGLE] + list(BATCH_PATHS)
    found += [Route(path, preflight, methods=["OPTIONS"]) for path in paths]
    return found
