"""One route per path: a 405 then names every method the path takes in its ``Allow`` header
(Starlette answers from the first route whose path matches)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]


def one_route_per_path(routes: list[Route]) -> list[Route]:
    groups: dict[str, list[Route]] = {}
    for route in routes:
        groups.setdefault(route.path, []).append(route)
    return [group[0] if len(group) == 1 else _merged(path, group) for path, group in groups.items()]


def _merged(path: str, group: list[Route]) -> Route:
    handlers: dict[str, Handler] = {}
    for route in group:
        for method in route.methods or ():
            handlers[method] = route.endpoint

    async def by_method(request: Request) -> Response:
        handler = handlers[request.method]
        request.scope["endpoint"] = handler  # metrics are labelled by the real handler
        return await handler(request)

    by_method.__name__ = "_or_".join(dict.fromkeys(h.__name__ for h in handlers.values()))
    return Route(path, by_method, methods=[m for m in handlers if m != "HEAD"])
