"""Profile API: read a unified profile and its timeline (server key); erase a person (admin)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.profiles.service import ProfileService, ProfileView
from relevo.web.auth import require
from relevo.web.json import JSONResponse
from relevo.web.params import page_limit

MAX_PAGE = 200


def render_profile(view: ProfileView) -> dict[str, Any]:
    p = view.profile
    return {
        "id": p.id,
        "created_at": p.created_at,
        "first_seen": p.first_seen,
        "last_seen": p.last_seen,
        "identities": [{"type": i.type, "value": i.value} for i in view.identifiers],
        "traits": p.trait_values(),
        "trait_sources": {
            name: {"at": s.at, "message_id": s.message_id} for name, s in p.traits.items()
        },
        "event_counts": p.event_counts,
        "type_counts": p.type_counts,
        "events_applied": p.events_applied,
        "consent": {k: {"granted": s.value, "at": s.at} for k, s in p.consent.items()},
        "context": {k: s.value for k, s in p.context.items()},
        "groups": {k: {"traits": s.value, "at": s.at} for k, s in p.groups.items()},
        "merged_from": p.merged_from,
        "segments": {name: {"entered_at": at} for name, at in view.segments.items()},
        "computed": view.computed,
        "merges": [
            {
                "at": j.at,
                "outcome": j.outcome,
                "survivor": j.survivor,
                "other": j.other,
                "identifier": j.identifier,
                "reason": j.reason,
                "message_id": j.message_id,
                "source": j.source,
            }
            for j in view.journal
        ],
    }


def _service(request: Request) -> ProfileService:
    service: ProfileService = request.app.state.services.profiles
    return service


async def get_profile(request: Request) -> Response:
    require(request, "server", "admin")
    view = await _service(request).get(request.path_params["identifier"])
    return JSONResponse(render_profile(view))


async def get_events(request: Request) -> Response:
    require(request, "server", "admin")
    page = await _service(request).events(
        request.path_params["identifier"],
        request.query_params.get("cursor"),
        page_limit(request, default=50, most=MAX_PAGE),
    )
    return JSONResponse({"data": page.events, "next_cursor": page.next_cursor})


async def get_segments(request: Request) -> Response:
    require(request, "server", "admin")
    view = await _service(request).get(request.path_params["identifier"])
    return JSONResponse(
        {"data": [{"segment": name, "entered_at": at} for name, at in view.segments.items()]}
    )


async def delete_profile(request: Request) -> Response:
    key = require(request, "admin")
    erasure = await _service(request).erase(request.path_params["identifier"], actor=key.id)
    return JSONResponse(
        {
            "deleted": True,
            "profile_ids": erasure.person.profile_ids,
            "identifiers_suppressed": len(erasure.person.identifiers),
            "log_events_erased": erasure.log_events_erased,
        }
    )


def routes() -> list[Route]:
    return [
        Route("/v1/profiles/{identifier:str}", get_profile, methods=["GET"]),
        Route("/v1/profiles/{identifier:str}", delete_profile, methods=["DELETE"]),
        Route("/v1/profiles/{identifier:str}/events", get_events, methods=["GET"]),
        Route("/v1/profiles/{identifier:str}/segments", get_segments, methods=["GET"]),
    ]
