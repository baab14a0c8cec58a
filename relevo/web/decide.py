"""``POST /v1/decide``: the offers to show in each asked placement, for one profile.

Server and admin keys (Bearer) name the profile by ``userId``, ``anonymousId`` or a profile id
and get the decision with its variant and policy; an admin key with ``debug: true`` also gets
the explanation. A write key (HTTP Basic, from a browser) must show a verified identity
(``userHash`` or ``profileToken``, see relevo.decisions.identity) for a ``userId`` and gets
offer content only. No caller ever gets profile fields a placement does not expose.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relevo.decisions.engine import Ask, DecideRequest, PlacementDecision
from relevo.decisions.identity import verify_token, verify_user_hash
from relevo.decisions.service import DecisionService
from relevo.errors import AuthError, Forbidden, ValidationError
from relevo.profiles.identifiers import ANONYMOUS_ID, USER_ID, Identifier
from relevo.ratelimit import check_rate
from relevo.services import PROFILE_ID, Services
from relevo.web.auth import basic_user, bearer_token
from relevo.web.body import read_body
from relevo.web.collect import cors_headers, preflight
from relevo.web.json import JSONResponse

MAX_BODY = 64 * 1024
MAX_PLACEMENTS = 20
MAX_ID_LENGTH = 256


class _PlacementAsk(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    limit: int | None = None


class DecideBody(msgspec.Struct, kw_only=True, rename="camel"):
    placements: list[str | _PlacementAsk]
    user_id: str | None = None
    anonymous_id: str | None = None
    profile_id: str | None = None
    user_hash: str | None = None
    profile_token: str | None = None
    write_key: str | None = None
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    debug: bool = False


class _WriteKeyOnly(msgspec.Struct, rename="camel"):
    write_key: str | None = None


_decoder = msgspec.json.Decoder(DecideBody)
_key_decoder = msgspec.json.Decoder(_WriteKeyOnly)


def _body_write_key(body: bytes) -> str | None:
    try:
        return _key_decoder.decode(body).write_key
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # no usable key: answered 401 before the body is judged


def _parse(body: bytes) -> DecideBody:
    try:
        parsed = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationError(f"invalid decide request: {exc}") from exc
    if not parsed.placements or len(parsed.placements) > MAX_PLACEMENTS:
        raise ValidationError(f"placements: ask for 1 to {MAX_PLACEMENTS} placements")
    for name in ("user_id", "anonymous_id", "profile_id"):
        value = getattr(parsed, name)
        if value is not None and not 0 < len(value) <= MAX_ID_LENGTH:
            raise ValidationError(f"{name}: 1 to {MAX_ID_LENGTH} characters")
    return parsed


def _asks(body: DecideBody) -> list[Ask]:
    asks = []
    for item in body.placements:
        if isinstance(item, str):
            asks.append(Ask(item))
        else:
            if item.limit is not None and item.limit < 1:
                raise ValidationError(f"placements: the limit of {item.id!r} must be 1 or more")
            asks.append(Ask(item.id, item.limit))
    return asks


def _identifier(body: DecideBody) -> Identifier | None:
    if body.profile_id:
        return Identifier(PROFILE_ID, body.profile_id)
    if body.user_id:
        return Identifier(USER_ID, body.user_id)
    if body.anonymous_id:
        return Identifier(ANONYMOUS_ID, body.anonymous_id)
    return None


def _browser_identifier(services: Services, body: DecideBody) -> Identifier | None:
    """A write-key caller's identity: verified for a user id, never a bare profile id."""
    secret = services.settings.identity_secret
    if body.profile_id:
        raise Forbidden("a write key cannot ask by profile id")
    if body.profile_token:
        if secret is None:
            raise Forbidden("profile tokens need RELEVO_IDENTITY_SECRET on the server")
        user = verify_token(secret.get_secret_value(), body.profile_token, services.clock.now())
        return Identifier(USER_ID, user)
    if body.user_id:
        if secret is None:
            raise Forbidden("a write key asking for a userId needs identity verification")
        if not body.user_hash or not verify_user_hash(
            secret.get_secret_value(), body.user_id, body.user_hash
        ):
            raise AuthError("userHash does not verify this userId")
        return Identifier(USER_ID, body.user_id)
    if body.anonymous_id:
        return Identifier(ANONYMOUS_ID, body.anonymous_id)
    return None


async def decide(request: Request) -> Response:
    services: Services = request.app.state.services
    raw = await read_body(request, MAX_BODY)
    token, write_key = bearer_token(request), basic_user(request)
    if token is None and write_key is None:  # a browser may send its write key in the body
        write_key = _body_write_key(raw)
    if token is not None:
        key = services.keys.bearer(token, allowed=("server", "admin"))
        await check_rate(services.limiter, key.id)
        body = _parse(raw)
        if body.debug and key.kind != "admin":
            raise Forbidden("debug explanations need an admin key")
        identifier = _identifier(body)
        browser = False
    else:
        access = services.keys.write_access(write_key)
        await check_rate(services.limiter, access.key.id)
        origins = access.source.allowed_origins
        origin = request.headers.get("origin")
        if origins and origin is not None and origin not in origins:
            raise Forbidden(f"origin {origin!r} may not ask this source for decisions")
        body = _parse(raw)
        if body.debug:
            raise Forbidden("debug explanations need an admin key")
        identifier = _browser_identifier(services, body)
        browser = True
    if identifier is None:
        raise ValidationError("name the profile: userId, anonymousId or profileId")
    unit = f"{identifier.type}:{identifier.value}"
    service: DecisionService = services.decisions
    result = service.decide(
        identifier, unit, DecideRequest(_asks(body), body.context, unit, body.debug)
    )
    payload = {"decisions": [_render(d, browser) for d in result.placements]}
    return JSONResponse(payload, headers=cors_headers(request))


def _render(decision: PlacementDecision, browser: bool) -> dict[str, Any]:
    record = decision.record
    out: dict[str, Any] = {
        "placement": decision.placement.id,
        "decision_id": record.id,
        "offers": [
            {
                "id": served.offer.id,
                "position": served.position,
                "content": served.content,
                "feedback": decision.feedback(served.offer),
            }
            for served in decision.served
        ],
    }
    if not browser:
        out["policy"] = record.policy
        out["experiment"] = record.experiment
        out["variant"] = record.variant
    if decision.explanation is not None:
        out["explanation"] = decision.explanation
    return out


def routes() -> list[Route]:
    return [
        Route("/v1/decide", decide, methods=["POST"]),
        Route("/v1/decide", preflight, methods=["OPTIONS"]),
    ]
