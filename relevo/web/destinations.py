"""Destinations API (admin key): definitions, failed deliveries (list, inspect, replay), and the
hashed CSV export of a segment for an ad platform."""

from __future__ import annotations

import io
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.channels import audiences
from relevo.destinations.members import audience_member
from relevo.destinations.model import DestinationDefinition
from relevo.destinations.service import DestinationService
from relevo.errors import NotFound, ValidationError
from relevo.store.base import FailedDelivery
from relevo.web.auth import audit, require
from relevo.web.json import JSONResponse
from relevo.web.params import MAX_ID, json_body, page_limit, query_id

MAX_PAGE = 500


def _service(request: Request) -> DestinationService:
    service: DestinationService = request.app.state.services.destinations
    return service


def render(definition: DestinationDefinition, *, with_secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(definition)
    if not with_secret and data.get("secret"):
        data["secret"] = "whsec_…" + data["secret"][-4:]
    return data


def render_failed(failed: FailedDelivery, *, with_payload: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": failed.id,
        "destination": failed.destination,
        "webhook_id": failed.webhook_id,
        "profile_id": failed.profile_id,
        "attempts": failed.attempts,
        "reason": failed.reason,
        "failed_at": failed.failed_at,
    }
    if with_payload:
        data["payload"] = msgspec.json.decode(failed.payload)
    return data


async def list_destinations(request: Request) -> Response:
    require(request, "admin")
    return JSONResponse({"data": [render(d) for d in _service(request).definitions().values()]})


async def create_destination(request: Request) -> Response:
    key = require(request, "admin")
    definition = await _service(request).put(await json_body(request))
    audit(request, key, "destination.put", definition.name, render(definition))
    # the signing secret is shown once, when it is made
    return JSONResponse(render(definition, with_secret=True), status_code=201)


async def put_destination(request: Request) -> Response:
    key = require(request, "admin")
    definition = await _service(request).put(await json_body(request), request.path_params["name"])
    audit(request, key, "destination.put", definition.name, render(definition))
    return JSONResponse(render(definition, with_secret=True))


async def get_destination(request: Request) -> Response:
    require(request, "admin")
    return JSONResponse(render(_service(request).get(request.path_params["name"])))


async def delete_destination(request: Request) -> Response:
    key = require(request, "admin")
    await _service(request).delete(request.path_params["name"])
    audit(request, key, "destination.delete", request.path_params["name"], {})
    return JSONResponse({"deleted": True})


async def list_failed(request: Request) -> Response:
    require(request, "admin")
    after = query_id(request, "after")
    limit = page_limit(request, default=100, most=MAX_PAGE)
    page = await anyio.to_thread.run_sync(
        _service(request).failed, request.query_params.get("destination"), after, limit
    )
    return JSONResponse(
        {
            "data": [render_failed(f) for f in page],
            "next_after": page[-1].id if len(page) == limit else None,
        }
    )


async def get_failed(request: Request) -> Response:
    require(request, "admin")
    wanted = request.path_params["failed_id"]
    if wanted > MAX_ID:
        raise NotFound(f"no failed delivery {wanted}")
    page = await anyio.to_thread.run_sync(_service(request).failed, None, wanted - 1, 1)
    if not page or page[0].id != wanted:
        raise NotFound(f"no failed delivery {wanted}")
    return JSONResponse(render_failed(page[0], with_payload=True))


FailedId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]


class ReplayRequest(msgspec.Struct):
    ids: Annotated[list[FailedId], msgspec.Meta(max_length=10_000)] = []
    destination: str | None = None


async def replay_failed(request: Request) -> Response:
    """Queue failed deliveries again (by id, or all of a destination's); same webhook ids."""
    key = require(request, "admin")
    ask: ReplayRequest = await json_body(request, ReplayRequest)
    service = _service(request)

    def of_destination(name: str) -> list[int]:
        found: list[int] = []
        after = 0
        while page := service.failed(name, after, MAX_PAGE):
            found.extend(f.id for f in page)
            after = page[-1].id
        return found

    ids = list(ask.ids)
    if ask.destination is not None:
        ids += await anyio.to_thread.run_sync(of_destination, ask.destination)
    if not ids:
        raise ValidationError("name failed delivery ids, or a destination")
    replayed = await anyio.to_thread.run_sync(service.replay, ids)
    audit(request, key, "deliveries.replay", ask.destination or "-", {"ids": ids})
    return JSONResponse({"replayed": replayed})


async def audience_csv(request: Request) -> Response:
    """A segment's members as hashed identifiers for an ad platform's CSV upload."""
    require(request, "admin")
    platform_name = request.query_params.get("platform", "google")
    try:
        platform = audiences.Platform(platform_name)
    except ValueError as exc:
        raise ValidationError("platform must be google or meta") from exc
    services = request.app.state.services
    name = request.path_params["name"]

    def build() -> str:
        members: list[audiences.Member] = []
        after: str | None = None
        while page := services.segments.members(name, after, 1000):
            members.extend(audience_member(services.store, pid) for pid, _ in page)
            after = page[-1][0]
        out = io.StringIO()
        audiences.write_members_csv(out, members, platform)
        return out.getvalue()

    body = await anyio.to_thread.run_sync(build)
    return Response(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}-{platform_name}.csv"'},
    )


def routes() -> list[Route]:
    return [
        Route("/v1/destinations", list_destinations, methods=["GET"]),
        Route("/v1/destinations", create_destination, methods=["POST"]),
        Route("/v1/destinations/{name:str}", get_destination, methods=["GET"]),
        Route("/v1/destinations/{name:str}", put_destination, methods=["PUT"]),
        Route("/v1/destinations/{name:str}", delete_destination, methods=["DELETE"]),
        Route("/v1/failed-deliveries", list_failed, methods=["GET"]),
        Route("/v1/failed-deliveries/replay", replay_failed, methods=["POST"]),
        Route("/v1/failed-deliveries/{failed_id:int}", get_failed, methods=["GET"]),
        Route("/v1/segments/{name:str}/audience.csv", audience_csv, methods=["GET"]),
    ]
