"""The OpenAPI 3.1 document of every endpoint (``GET /openapi.json``).

Written as data next to the routes; a test checks that every route is documented here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from relevo import __version__
from relevo.web.collect import BATCH_PATHS, SINGLE
from relevo.web.openapi_decide import SCHEMAS as DECIDE_SCHEMAS, decide_paths

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(*codes: int, ok: dict[str, Any] | None = None) -> dict[str, Any]:
    described = {
        200: ("OK", ok or {"type": "object"}),
        201: ("Created", ok or {"type": "object"}),
        204: ("No content", None),
        400: ("Invalid input; the body says what is wrong", _ERROR),
        401: ("No key, or an unknown one", _ERROR),
        403: ("The key may not do this (or the origin may not send here)", _ERROR),
        404: ("Not found", _ERROR),
        409: ("It exists already", _ERROR),
        413: ("Request, event or batch over its size limit", _ERROR),
        429: ("Backpressure: retry after the Retry-After header's seconds", _ERROR),
        503: ("Not ready", {"type": "object"}),
    }
    out: dict[str, Any] = {}
    for code in codes:
        text, schema = described[code]
        entry: dict[str, Any] = {"description": text}
        if schema is not None:
            entry["content"] = {"application/json": {"schema": schema}}
        out[str(code)] = entry
    return out


_COLLECT_CODES = (200, 400, 401, 403, 413, 429)
_WRITE_KEY: list[dict[str, list[str]]] = [{"writeKeyBasic": []}, {"writeKeyQuery": []}, {}]
_SERVER: list[dict[str, list[str]]] = [{"bearer": []}]


def _collect_op(summary: str, schema: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["collect"],
        "security": _WRITE_KEY,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
                "text/plain": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
            },
        },
        "responses": _responses(*_COLLECT_CODES, ok={"$ref": "#/components/schemas/CollectReport"}),
    }


_PREFLIGHT = {
    "summary": "CORS preflight",
    "tags": ["collect"],
    "responses": _responses(204),
}

_IDENTIFIER = {
    "name": "identifier",
    "in": "path",
    "required": True,
    "description": "A profile id, or type:value (user_id:42, anonymous_id:abc, email:a@b.c)",
    "schema": {"type": "string"},
}


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, event_type in SINGLE.items():
        paths[f"/v1/{name}"] = {
            "post": _collect_op(f"Send one {event_type} call", "Event"),
            "options": _PREFLIGHT,
        }
    for path in BATCH_PATHS:
        paths[path] = {
            "post": _collect_op("Send a batch of calls", "Batch"),
            "options": _PREFLIGHT,
        }
    paths["/v1/profiles/{identifier}"] = {
        "get": {
            "summary": "A unified profile",
            "tags": ["profiles"],
            "security": _SERVER,
            "parameters": [_IDENTIFIER],
            "responses": _responses(200, 400, 401, 403, 404),
        },
        "delete": {
            "summary": "Erase a person everywhere and suppress their identifiers (admin key)",
            "tags": ["profiles"],
            "security": _SERVER,
            "parameters": [_IDENTIFIER],
            "responses": _responses(200, 400, 401, 403, 404),
        },
    }
    paths["/v1/profiles/{identifier}/events"] = {
        "get": {
            "summary": "A profile's timeline, newest first",
            "tags": ["profiles"],
            "security": _SERVER,
            "parameters": [
                _IDENTIFIER,
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                },
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": _responses(200, 400, 401, 403, 404),
        }
    }
    paths["/v1/profiles/{identifier}/segments"] = {
        "get": {
            "summary": "The segments a profile is in, with when it entered each",
            "tags": ["profiles"],
            "security": _SERVER,
            "parameters": [_IDENTIFIER],
            "responses": _responses(200, 400, 401, 403, 404),
        }
    }
    segment_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    definition = {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SegmentDefinition"}}
        }
    }
    seg = {"tags": ["segments"], "security": _SERVER}
    paths["/v1/segments"] = {
        "get": {
            **seg,
            "summary": "List segments with sizes and backfill progress",
            "responses": _responses(200, 401, 403),
        },
        "post": {
            **seg,
            "summary": "Create a segment (admin key); it is backfilled",
            "requestBody": definition,
            "responses": _responses(201, 400, 401, 403, 409),
        },
    }
    paths["/v1/segments/validate"] = {
        "post": {
            **seg,
            "summary": "Validate a definition without saving it (admin key)",
            "requestBody": definition,
            "responses": _responses(200, 400, 401, 403),
        },
    }
    paths["/v1/segments/{name}"] = {
        "get": {
            **seg,
            "summary": "A segment: definition, size, backfill progress",
            "parameters": [segment_name],
            "responses": _responses(200, 401, 403, 404),
        },
        "put": {
            **seg,
            "summary": "Create or replace a segment (admin key)",
            "parameters": [segment_name],
            "requestBody": definition,
            "responses": _responses(200, 400, 401, 403),
        },
        "delete": {
            **seg,
            "summary": "Delete a segment (admin key)",
            "parameters": [segment_name],
            "responses": _responses(200, 401, 403, 404),
        },
    }
    paths["/v1/segments/{name}/members"] = {
        "get": {
            **seg,
            "summary": "A segment's members, paginated by profile id",
            "parameters": [
                segment_name,
                {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": _responses(200, 400, 401, 403, 404),
        },
    }
    dest = {"tags": ["destinations"], "security": _SERVER}
    dest_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    dest_body = {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DestinationDefinition"}}
        }
    }
    paths["/v1/destinations"] = {
        "get": {
            **dest,
            "summary": "List destinations (secrets masked)",
            "responses": _responses(200, 401, 403),
        },
        "post": {
            **dest,
            "summary": "Create a destination; its URL is checked against SSRF",
            "requestBody": dest_body,
            "responses": _responses(201, 400, 401, 403),
        },
    }
    paths["/v1/destinations/{name}"] = {
        "get": {
            **dest,
            "summary": "A destination",
            "parameters": [dest_name],
            "responses": _responses(200, 401, 403, 404),
        },
        "put": {
            **dest,
            "summary": "Create or replace a destination",
            "parameters": [dest_name],
            "requestBody": dest_body,
            "responses": _responses(200, 400, 401, 403, 404),
        },
        "delete": {
            **dest,
            "summary": "Delete a destination and its queued deliveries",
            "parameters": [dest_name],
            "responses": _responses(200, 401, 403, 404),
        },
    }
    paths["/v1/failed-deliveries"] = {
        "get": {
            **dest,
            "summary": "Deliveries that failed for good",
            "parameters": [
                {"name": "destination", "in": "query", "schema": {"type": "string"}},
                {"name": "after", "in": "query", "schema": {"type": "integer"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}},
            ],
            "responses": _responses(200, 400, 401, 403),
        },
    }
    paths["/v1/failed-deliveries/replay"] = {
        "post": {
            **dest,
            "summary": "Queue failed deliveries again (same webhook ids)",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "ids": {"type": "array", "items": {"type": "integer"}},
                                "destination": {"type": "string"},
                            },
                        }
                    }
                }
            },
            "responses": _responses(200, 400, 401, 403),
        },
    }
    paths["/v1/failed-deliveries/{failed_id}"] = {
        "get": {
            **dest,
            "summary": "One failed delivery with its payload",
            "parameters": [
                {"name": "failed_id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "responses": _responses(200, 401, 403, 404),
        },
    }
    paths["/v1/segments/{name}/audience.csv"] = {
        "get": {
            **dest,
            "summary": "A segment's members as hashed identifiers (CSV upload)",
            "parameters": [
                dest_name,
                {"name": "platform", "in": "query", "schema": {"enum": ["google", "meta"]}},
            ],
            "responses": {
                "200": {
                    "description": "CSV",
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                },
                **_responses(400, 401, 403, 404),
            },
        },
    }
    admin = {"tags": ["admin"], "security": _SERVER}
    paths["/v1/admin/keys"] = {
        "get": {**admin, "summary": "List keys", "responses": _responses(200, 401, 403)},
        "post": {
            **admin,
            "summary": "Create a key (the secret is shown once)",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["kind"],
                            "properties": {
                                "kind": {"enum": ["write", "server", "admin"]},
                                "source": {"type": "string"},
                            },
                        }
                    }
                }
            },
            "responses": _responses(201, 400, 401, 403),
        },
    }
    paths["/v1/admin/keys/{key_id}"] = {
        "delete": {
            **admin,
            "summary": "Revoke a key",
            "parameters": [
                {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": _responses(200, 401, 403, 404),
        }
    }
    paths["/v1/admin/sources"] = {
        "get": {**admin, "summary": "List sources", "responses": _responses(200, 401, 403)}
    }
    paths["/v1/admin/sources/{name}"] = {
        "put": {
            **admin,
            "summary": "Create or update a source (its allowed browser origins)",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "allowed_origins": {"type": "array", "items": {"type": "string"}}
                            },
                        }
                    }
                }
            },
            "responses": _responses(200, 400, 401, 403),
        }
    }
    ops = {"tags": ["operations"]}
    paths["/healthz"] = {"get": {**ops, "summary": "Liveness", "responses": _responses(200)}}
    paths["/readyz"] = {
        "get": {**ops, "summary": "Readiness and processing lag", "responses": _responses(200, 503)}
    }
    paths["/metrics"] = {
        "get": {
            **ops,
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    paths.update(decide_paths(_responses, _SERVER))
    paths["/openapi.json"] = {
        "get": {**ops, "summary": "This document", "responses": _responses(200)}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Relevo", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKeyBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "write key as the user name, empty password",
                },
                "writeKeyQuery": {"type": "apiKey", "in": "query", "name": "writeKey"},
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "server or admin key",
                },
            },
            "schemas": {**_SCHEMAS, **DECIDE_SCHEMAS},
        },
    }


_ID = {"type": ["string", "integer", "null"]}
_OBJ = {"type": ["object", "null"]}
_SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "description": "A Segment-spec call. userId or anonymousId is required.",
        "properties": {
            "type": {"enum": ["track", "identify", "page", "screen", "group", "alias"]},
            "messageId": _ID,
            "userId": _ID,
            "anonymousId": _ID,
            "event": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "category": {"type": ["string", "null"]},
            "groupId": _ID,
            "previousId": _ID,
            "properties": _OBJ,
            "traits": _OBJ,
            "context": _OBJ,
            "integrations": _OBJ,
            "timestamp": {"type": ["string", "null"], "format": "date-time"},
            "originalTimestamp": {"type": ["string", "null"], "format": "date-time"},
            "sentAt": {"type": ["string", "null"], "format": "date-time"},
            "writeKey": {"type": ["string", "null"]},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "sentAt": {"type": ["string", "null"], "format": "date-time"},
            "writeKey": {"type": ["string", "null"]},
            "context": _OBJ,
            "integrations": _OBJ,
        },
    },
    "SegmentDefinition": {
        "type": "object",
        "required": ["name", "rule"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_\\-]{0,63}$"},
            "rule": {"description": "the rule, in text form (a string) or JSON form (an object)"},
            "description": {"type": "string"},
        },
    },
    "DestinationDefinition": {
        "type": "object",
        "required": ["name", "type", "url"],
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["webhook", "audience"]},
            "url": {"type": "string", "format": "uri"},
            "events": {"type": "array", "items": {"type": "string"}},
            "segments": {"type": "array", "items": {"type": "string"}},
            "consent": {"type": "array", "items": {"type": "string"}},
            "secret": {"type": ["string", "null"]},
            "platform": {"enum": ["google", "meta", None]},
            "enabled": {"type": "boolean"},
        },
    },
    "CollectReport": {
        "type": "object",
        "required": ["success"],
        "properties": {
            "success": {"const": True},
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
        },
    },
    "Problem": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "message": {"type": "string"},
            "code": {"type": "string"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
                },
            }
        },
    },
}
