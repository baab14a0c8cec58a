"""Segments API: definitions (admin key, every change audited), sizes and members (server key)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.segments.model import Segment
from relevo.segments.service import SegmentInfo, SegmentService
from relevo.store.base import ApiKey
from relevo.web.auth import audit, require
from relevo.web.json import JSONResponse
from relevo.web.params import json_body, page_limit

MAX_PAGE = 1000


def _service(request: Request) -> SegmentService:
    service: SegmentService = request.app.state.services.segments
    return service


def render(info: SegmentInfo) -> dict[str, Any]:
    backfill = info.backfill
    return {
        **msgspec.to_builtins(info.definition),
        "version": info.version,
        "size": info.size,
        "backfill": (
            {"state": "running", "done": backfill.done, "total": backfill.total}
            if backfill
            else {"state": "done"}
        ),
    }


async def list_segments(request: Request) -> Response:
    require(request, "server", "admin")
    return JSONResponse({"data": [render(i) for i in _service(request).all()]})


async def get_segment(request: Request) -> Response:
    require(request, "server", "admin")
    return JSONResponse(render(_service(request).info(request.path_params["name"])))


async def members(request: Request) -> Response:
    require(request, "server", "admin")
    limit = page_limit(request, default=100, most=MAX_PAGE)
    page = _service(request).members(
        request.path_params["name"], request.query_params.get("cursor"), limit
    )
    return JSONResponse(
        {
            "data": [{"profile_id": pid, "entered_at": at} for pid, at in page],
            "next_cursor": page[-1][0] if len(page) == limit else None,
        }
    )


def _changed(request: Request, key: ApiKey, segment: Segment, existed: bool) -> None:
    details = {**msgspec.to_builtins(segment.definition), "version": segment.version}
    audit(request, key, "segment.update" if existed else "segment.create", segment.name, details)


def _exists(request: Request, name: Any) -> bool:
    return any(info.definition.name == name for info in _service(request).all())


async def create_segment(request: Request) -> Response:
    key = require(request, "admin")
    data = await json_body(request)
    segment = await _service(request).put(data, create=True)
    _changed(request, key, segment, existed=False)
    return JSONResponse(render(_service(request).info(segment.name)), status_code=201)


async def put_segment(request: Request) -> Response:
    key = require(request, "admin")
    name = request.path_params["name"]
    existed = _exists(request, name)
    segment = await _service(request).put(await json_body(request), name=name)
    _changed(request, key, segment, existed)
    return JSONResponse(render(_service(request).info(name)))


async def delete_segment(request: Request) -> Response:
    key = require(request, "admin")
    name = request.path_params["name"]
    await _service(request).delete(name)
    audit(request, key, "segment.delete", name, {})
    return JSONResponse({"deleted": True})


async def validate_segment(request: Request) -> Response:
    require(request, "admin")
    segment = _service(request).validate(await json_body(request))
    return JSONResponse(
        {"valid": True, "fields": sorted(segment.rule.fields), "uses_now": segment.rule.uses_now}
    )


def routes() -> list[Route]:
    return [
        Route("/v1/segments", list_segments, methods=["GET"]),
        Route("/v1/segments", create_segment, methods=["POST"]),
        Route("/v1/segments/validate", validate_segment, methods=["POST"]),
        Route("/v1/segments/{name:str}", get_segment, methods=["GET"]),
        Route("/v1/segments/{name:str}", put_segment, methods=["PUT"]),
        Route("/v1/segments/{name:str}", delete_segment, methods=["DELETE"]),
        Route("/v1/segments/{name:str}/members", members, methods=["GET"]),
    ]
