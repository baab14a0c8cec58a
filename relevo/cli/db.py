"""``relevo db``: the state store's schema."""

from __future__ import annotations

import click

from relevo.cli.context import settings_from, store_option
from relevo.errors import RelevoError
from relevo.store import schema
from relevo.store.registry import migrations_folder, open_store


@click.group()
def db() -> None:
    """The state store's schema."""


@db.command("migrate")
@store_option
def migrate(store_url: str | None) -> None:
    """Apply the store's migrations not yet applied (safe to run again, and from several
    processes at once) and print the schema version."""
    url = settings_from(store_url=store_url).store_url
    try:
        store = open_store(url)
        try:
            store.migrate()
        finally:
            store.close()
    except RelevoError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(
        f"{url.split(':', 1)[0]} store at schema version {schema.latest(migrations_folder(url))}"
    )
