"""The OpenAPI paths and schemas of decisions: ``/v1/decide``, the catalog, the results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relevo.web.catalog import PATHS

# relevo.web.openapi._responses, passed in: one place builds response objects
Responses = Callable[..., dict[str, Any]]


def decide_paths(responses: Responses, server: list[dict[str, list[str]]]) -> dict[str, Any]:
    browser: list[dict[str, list[str]]] = [*server, {"writeKeyBasic": []}]
    decide_op = {
        "summary": "Decide the offers of placements for one profile",
        "description": "Server and admin keys name the profile by userId, anonymousId or "
        "profileId; a write key (a browser) needs userHash or profileToken for a userId and "
        "gets offer content only. debug (admin key) adds the explanation.",
        "tags": ["decide"],
        "security": browser,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DecideRequest"}}
            },
        },
        "responses": responses(
            200, 400, 401, 403, 404, 413, ok={"$ref": "#/components/schemas/DecideResponse"}
        ),
    }
    paths: dict[str, Any] = {
        "/v1/decide": {
            "post": decide_op,
            "options": {
                "summary": "CORS preflight",
                "tags": ["decide"],
                "responses": responses(204),
            },
        }
    }
    for plural, kind in PATHS.items():
        tag = {"tags": ["catalog"], "security": server}
        item_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        body = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
        paths[f"/v1/{plural}"] = {
            "get": {**tag, "summary": f"List {plural}", "responses": responses(200, 401, 403)},
            "post": {
                **tag,
                "summary": f"Create a {kind} (admin key)",
                "requestBody": body,
                "responses": responses(201, 400, 401, 403, 409),
            },
        }
        paths[f"/v1/{plural}/{{id}}"] = {
            "get": {
                **tag,
                "summary": f"A {kind}",
                "parameters": [item_id],
                "responses": responses(200, 401, 403, 404),
            },
            "put": {
                **tag,
                "summary": f"Create or replace a {kind} (admin key)",
                "parameters": [item_id],
                "requestBody": body,
                "responses": responses(200, 201, 400, 401, 403),
            },
            "delete": {
                **tag,
                "summary": f"Delete a {kind} (admin key)",
                "parameters": [item_id],
                "responses": responses(200, 400, 401, 403, 404),
            },
        }
    results = {"tags": ["catalog"], "security": server}
    item = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/v1/experiments/{id}/results"] = {
        "get": {
            **results,
            "summary": "Impressions, clicks, conversions, rates with intervals and uplift per "
            "variant",
            "parameters": [item],
            "responses": responses(200, 401, 403, 404),
        }
    }
    paths["/v1/placements/{id}/results"] = {
        "get": {
            **results,
            "summary": "Personalised against the holdout group, with uplift",
            "parameters": [item],
            "responses": responses(200, 401, 403, 404),
        }
    }
    return paths


_ASK = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
        },
    ]
}
SCHEMAS: dict[str, Any] = {
    "DecideRequest": {
        "type": "object",
        "required": ["placements"],
        "properties": {
            "placements": {"type": "array", "items": _ASK, "minItems": 1, "maxItems": 20},
            "userId": {"type": "string"},
            "anonymousId": {"type": "string"},
            "profileId": {"type": "string"},
            "userHash": {"type": "string", "description": "HMAC-SHA256 of userId (hex)"},
            "profileToken": {"type": "string"},
            "writeKey": {"type": "string"},
            "context": {"type": "object"},
            "debug": {"type": "boolean"},
        },
    },
    "DecideResponse": {
        "type": "object",
        "properties": {
            "decisions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "placement": {"type": "string"},
                        "decision_id": {"type": "string"},
                        "offers": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "position": {"type": "integer"},
                                    "content": {},
                                    "feedback": {"type": "object"},
                                },
                            },
                        },
                        "policy": {"type": "string"},
                        "experiment": {"type": ["string", "null"]},
                        "variant": {"type": ["string", "null"]},
                        "explanation": {"type": "object"},
                    },
                },
            }
        },
    },
}
