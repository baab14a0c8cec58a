"""The app factory: ``create_app(settings)`` builds a Starlette app over the node's services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relevo._clock import Clock
from relevo.config import Settings
from relevo.errors import RelevoError
from relevo.metrics import Metrics
from relevo.services import Services, build_services
from relevo.web import admin, catalog, collect, decide, destinations, ops, profiles, segments
from relevo.web.errors import http_error_handler, relevo_error_handler, unexpected_error_handler
from relevo.web.json import JSONResponse
from relevo.web.openapi import openapi_document
from relevo.web.routing import one_route_per_path


class RequestMetrics:
    """Latency histogram by route (the matched endpoint's name), method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.histogram = metrics.request_duration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched")
            self.histogram.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    services: Services | None = None,
    process: bool = True,
) -> Starlette:
    """Build the app. ``services`` may be injected (tests); otherwise built from settings.

    ``process=False`` is the API role (``relevo serve --role api``): collection, decisions and
    the APIs only; workers elsewhere apply the log and deliver to destinations.
    """
    services = services or build_services(settings or Settings(), clock, processing=process)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services.start(process=process)
        dispatcher = services.dispatcher() if process else None
        dispatching = (
            asyncio.create_task(dispatcher.run(), name="relevo-dispatcher") if dispatcher else None
        )
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            if dispatcher is not None and dispatching is not None:
                dispatcher.stop()
                await dispatching
            await services.limiter.close()
            services.close()

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    app = Starlette(
        routes=one_route_per_path(
            [
                # the hot paths first: Starlette tries routes in order
                *decide.routes(),
                *collect.routes(),
                *profiles.routes(),
                *segments.routes(),
                *destinations.routes(),
                *catalog.routes(),
                *admin.routes(),
                *ops.routes(),
                Route("/openapi.json", openapi, methods=["GET"]),
            ]
        ),
        lifespan=lifespan,
        exception_handlers={
            RelevoError: relevo_error_handler,
            HTTPException: http_error_handler,
            Exception: unexpected_error_handler,
        },
    )
    app.state.services = services
    app.state.ready = False
    app.add_middleware(RequestMetrics, metrics=services.metrics)
    return app
