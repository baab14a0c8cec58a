"""``relevo deliveries``: inspect and replay failed destination deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click

from relevo.cli.context import settings_from, store_option
from relevo.store.base import Store
from relevo.store.registry import open_store

PAGE = 500


@contextmanager
def _store(store_url: str | None) -> Iterator[Store]:
    store = open_store(settings_from(store_url=store_url).store_url)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


@click.group()
def deliveries() -> None:
    """Failed deliveries: list, show, replay (with the same webhook ids)."""


@deliveries.command("failed")
@click.option("--destination", default=None, help="Only this destination's.")
@store_option
def failed(destination: str | None, store_url: str | None) -> None:
    """List failed deliveries: id, destination, attempts, reason."""
    with _store(store_url) as store:
        after = 0
        while page := store.failed_deliveries(destination, after, PAGE):
            for item in page:
                click.echo(
                    f"{item.id}\t{item.destination}\t{item.webhook_id}\t{item.attempts}\t"
                    f"{item.failed_at:%Y-%m-%dT%H:%M:%SZ}\t{item.reason}"
                )
            after = page[-1].id


@deliveries.command("show")
@click.argument("failed_id", type=int)
@store_option
def show(failed_id: int, store_url: str | None) -> None:
    """Show one failed delivery with its payload."""
    with _store(store_url) as store:
        page = store.failed_deliveries(None, failed_id - 1, 1)
        if not page or page[0].id != failed_id:
            raise click.ClickException(f"no failed delivery {failed_id}")
        item = page[0]
        click.echo(
            json.dumps(
                {
                    "id": item.id,
                    "destination": item.destination,
                    "webhook_id": item.webhook_id,
                    "profile_id": item.profile_id,
                    "attempts": item.attempts,
                    "reason": item.reason,
                    "failed_at": item.failed_at.isoformat(),
                    "payload": json.loads(item.payload),
                },
                indent=2,
            )
        )


@deliveries.command("replay")
@click.argument("failed_ids", type=int, nargs=-1)
@click.option("--destination", default=None, help="Replay all of this destination's.")
@store_option
def replay(failed_ids: tuple[int, ...], destination: str | None, store_url: str | None) -> None:
    """Queue failed deliveries again; a running server sends them with their old webhook ids."""
    with _store(store_url) as store:
        ids = list(failed_ids)
        if destination is not None:
            after = 0
            while page := store.failed_deliveries(destination, after, PAGE):
                ids.extend(item.id for item in page)
                after = page[-1].id
        if not ids:
            raise click.ClickException("name failed delivery ids, or --destination")
        replayed = store.replay_failed(ids, datetime.now(UTC))
    click.echo(f"replayed {replayed}")
