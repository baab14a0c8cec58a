"""Catalog API: placements, offers and experiments (admin key, every change audited), and the
results of experiments and of the holdout (server key)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.decisions.service import DecisionService, Kind
from relevo.errors import Conflict
from relevo.web.auth import audit, require
from relevo.web.json import JSONResponse
from relevo.web.params import json_body

PATHS: dict[str, Kind] = {"placements": "placement", "offers": "offer", "experiments": "experiment"}


def _service(request: Request) -> DecisionService:
    service: DecisionService = request.app.state.services.decisions
    return service


def _kind(request: Request) -> Kind:
    return PATHS[request.url.path.split("/")[2]]


async def list_items(request: Request) -> Response:
    require(request, "server", "admin")
    items = _service(request).items(_kind(request))
    return JSONResponse({"data": [msgspec.to_builtins(i) for i in items]})


async def get_item(request: Request) -> Response:
    require(request, "server", "admin")
    item = _service(request).item(_kind(request), request.path_params["id"])
    return JSONResponse(msgspec.to_builtins(item))


async def create_item(request: Request) -> Response:
    return await _put(request, None)


async def put_item(request: Request) -> Response:
    return await _put(request, request.path_params["id"])


async def _put(request: Request, item_id: str | None) -> Response:
    """POST creates (409 if the id is taken); PUT creates or replaces the id in the path."""
    key = require(request, "admin")
    kind = _kind(request)
    data: Any = await json_body(request)
    if item_id is not None and isinstance(data, dict):
        data = {**data, "id": item_id}
    service = _service(request)
    existed = isinstance(data, dict) and any(i.id == data.get("id") for i in service.items(kind))
    if existed and item_id is None:
        raise Conflict(f"{kind} {data['id']!r} exists: PUT /v1/{kind}s/{data['id']} replaces it")
    item = service.put(kind, data)
    details = msgspec.to_builtins(item)
    audit(request, key, f"{kind}.{'update' if existed else 'create'}", item.id, details)
    return JSONResponse(details, status_code=200 if existed else 201)


async def delete_item(request: Request) -> Response:
    key = require(request, "admin")
    kind = _kind(request)
    _service(request).delete(kind, request.path_params["id"])
    audit(request, key, f"{kind}.delete", request.path_params["id"], {})
    return JSONResponse({"deleted": True})


async def experiment_results(request: Request) -> Response:
    require(request, "server", "admin")
    return JSONResponse(_service(request).experiment_results(request.path_params["id"]))


async def placement_results(request: Request) -> Response:
    require(request, "server", "admin")
    return JSONResponse(_service(request).placement_results(request.path_params["id"]))


def routes() -> list[Route]:
    found = []
    for path in PATHS:
        found += [
            Route(f"/v1/{path}", list_items, methods=["GET"]),
            Route(f"/v1/{path}", create_item, methods=["POST"]),
            Route(f"/v1/{path}/{{id:str}}", get_item, methods=["GET"]),
            Route(f"/v1/{path}/{{id:str}}", put_item, methods=["PUT"]),
            Route(f"/v1/{path}/{{id:str}}", delete_item, methods=["DELETE"]),
        ]
    return [
        *found,
        Route("/v1/experiments/{id:str}/results", experiment_results, methods=["GET"]),
        Route("/v1/placements/{id:str}/results", placement_results, methods=["GET"]),
    ]
