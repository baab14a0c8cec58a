"""``relevo serve`` and ``relevo demo``."""

from __future__ import annotations

import asyncio
import json

import click
import httpx
import uvicorn
from starlette.applications import Starlette

from relevo._runtime import tune_for_server
from relevo.cli.context import settings_from, store_option
from relevo.config import Settings
from relevo.logs import configure_logging
from relevo.web.app import create_app


def _server(settings: Settings, role: str = "all") -> tuple[uvicorn.Server, Starlette]:
    configure_logging(settings.log_level)
    app = create_app(settings, process=role == "all")
    tune_for_server()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config), app


@click.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option(
    "--role",
    type=click.Choice(["all", "api"]),
    default="all",
    help="all: everything in one process (the embedded default); api: collection, decisions "
    "and the APIs only, with `relevo worker` processes applying the log.",
)
@store_option
def serve(host: str | None, port: int | None, role: str, store_url: str | None) -> None:
    """Run Relevo: collection, processing and the APIs in one process (or the API role)."""
    settings = settings_from(host=host, port=port, store_url=store_url)
    if role == "api" and (
        settings.store_url.startswith("sqlite:") or settings.stream_url.startswith("embedded:")
    ):
        raise click.UsageError(
            "--role api needs a store and an event log that other processes share: "
            "RELEVO_STORE_URL=postgresql://... and RELEVO_STREAM_URL=redis://... or nats://..."
        )
    server, _ = _server(settings, role)
    server.run()


DEMO_CALLS = [
    (
        "page",
        {
            "anonymousId": "demo-anon-1",
            "name": "Home",
            "properties": {"url": "https://shop.example/"},
        },
    ),
    (
        "track",
        {
            "anonymousId": "demo-anon-1",
            "event": "Product Viewed",
            "properties": {"product_id": "sku-42", "category": "running", "price": 120},
        },
    ),
    (
        "track",
        {
            "anonymousId": "demo-anon-1",
            "event": "Product Added",
            "properties": {"product_id": "sku-42", "price": 120},
        },
    ),
    (
        "identify",
        {
            "anonymousId": "demo-anon-1",
            "userId": "demo-user-1",
            "traits": {"email": "ada@example.com", "name": "Ada", "plan": "gold"},
        },
    ),
    (
        "track",
        {
            "userId": "demo-user-1",
            "event": "Order Completed",
            "properties": {"order_id": "o-1", "revenue": 120},
        },
    ),
]


@click.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@store_option
def demo(host: str | None, port: int | None, store_url: str | None) -> None:
    """Serve, send an anonymous-then-login journey through the API, print the profile."""
    settings = settings_from(host=host, port=port, store_url=store_url)
    server, app = _server(settings)
    asyncio.run(_demo(server, app, settings))


async def _demo(server: uvicorn.Server, app: Starlette, settings: Settings) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.05)
    keys = app.state.services.keys
    write, admin = keys.create("write", "demo", actor="demo"), keys.create("admin", actor="demo")
    base = f"http://{settings.host}:{settings.port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for kind, call in DEMO_CALLS:
            response = await client.post(f"/v1/{kind}", json=call, auth=(write.secret, ""))
            response.raise_for_status()
        profile = {}
        for _ in range(100):
            answer = await client.get(
                "/v1/profiles/user_id:demo-user-1",
                headers={"Authorization": f"Bearer {admin.secret}"},
            )
            profile = answer.json()
            if answer.status_code == 200 and profile.get("events_applied") == len(DEMO_CALLS):
                break
            await asyncio.sleep(0.05)
    click.echo(json.dumps(profile, indent=2, default=str))
    click.echo(f"\nRelevo is serving on {base}")
    click.echo(f"write key (collect): {write.secret}")
    click.echo(f"admin key (everything): {admin.secret}")
    click.echo(
        "try: curl -H 'Authorization: Bearer <admin key>' "
        f"{base}/v1/profiles/user_id:demo-user-1   (Ctrl-C to stop)"
    )
    await task
