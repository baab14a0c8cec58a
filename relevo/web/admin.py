"""Admin API (admin key): sources and keys. Every change is audited."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.errors import NotFound
from relevo.keys import KeyRing
from relevo.store.base import ApiKey, Source
from relevo.web.auth import require
from relevo.web.json import JSONResponse
from relevo.web.params import json_body


class NewKeyRequest(msgspec.Struct):
    kind: str
    source: str | None = None


class SourceRequest(msgspec.Struct):
    allowed_origins: list[str] = []


def render_key(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "kind": key.kind,
        "source": key.source,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


async def create_key(request: Request) -> Response:
    admin = require(request, "admin")
    ask = await json_body(request, NewKeyRequest)
    ring: KeyRing = request.app.state.services.keys
    new = ring.create(ask.kind, ask.source, actor=admin.id)
    return JSONResponse({**render_key(new.key), "secret": new.secret}, status_code=201)


async def list_keys(request: Request) -> Response:
    require(request, "admin")
    keys = request.app.state.services.store.list_keys()
    return JSONResponse({"data": [render_key(k) for k in keys]})


async def revoke_key(request: Request) -> Response:
    admin = require(request, "admin")
    ring: KeyRing = request.app.state.services.keys
    if not ring.revoke(request.path_params["key_id"], actor=admin.id):
        raise NotFound("no such active key")
    return JSONResponse({"revoked": True})


async def list_sources(request: Request) -> Response:
    require(request, "admin")
    sources = request.app.state.services.store.list_sources()
    return JSONResponse({"data": [asdict(s) for s in sources]})


async def put_source(request: Request) -> Response:
    admin = require(request, "admin")
    ask = await json_body(request, SourceRequest)
    services = request.app.state.services
    source = Source(request.path_params["name"], ask.allowed_origins)
    services.store.upsert_source(source)
    services.keys.forget_cached()  # write keys cache their source: narrowing applies at once
    services.store.audit(services.clock.now(), admin.id, "source.put", source.name, asdict(source))
    return JSONResponse(asdict(source))


def routes() -> list[Route]:
    return [
        Route("/v1/admin/keys", create_key, methods=["POST"]),
        Route("/v1/admin/keys", list_keys, methods=["GET"]),
        Route("/v1/admin/keys/{key_id:str}", revoke_key, methods=["DELETE"]),
        Route("/v1/admin/sources", list_sources, methods=["GET"]),
        Route("/v1/admin/sources/{name:str}", put_source, methods=["PUT"]),
    ]
