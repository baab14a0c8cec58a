"""``relevo keys``: create, list and revoke API keys."""

from __future__ import annotations

import click

from relevo._clock import SystemClock
from relevo.cli.context import settings_from, store_option
from relevo.errors import RelevoError
from relevo.keys import KINDS, KeyRing
from relevo.store.registry import open_store


@click.group()
def keys() -> None:
    """Manage write, server and admin keys."""


@keys.command("create")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--source", default=None, help="Source of a write key (default: 'default').")
@store_option
def create(kind: str, source: str | None, store_url: str | None) -> None:
    """Create a key; its secret is printed once, as the last line."""
    store = open_store(settings_from(store_url=store_url).store_url)
    try:
        store.migrate()
        new = KeyRing(store, SystemClock()).create(kind, source)
    except RelevoError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(
        f"created {new.key.kind} key {new.key.id}"
        + (f" for source {new.key.source}" if new.key.source else ""),
        err=True,
    )
    click.echo(new.secret)


@keys.command("list")
@store_option
def list_keys(store_url: str | None) -> None:
    """List keys (never their secrets)."""
    store = open_store(settings_from(store_url=store_url).store_url)
    try:
        store.migrate()
        for key in store.list_keys():
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            click.echo(f"{key.id}\t{key.kind}\t{key.source or '-'}\t{state}")
    finally:
        store.close()


@keys.command("revoke")
@click.argument("key_id")
@store_option
def revoke(key_id: str, store_url: str | None) -> None:
    """Revoke a key by its id."""
    store = open_store(settings_from(store_url=store_url).store_url)
    try:
        store.migrate()
        if not KeyRing(store, SystemClock()).revoke(key_id):
            raise click.ClickException(f"no active key {key_id}")
    finally:
        store.close()
    click.echo(f"revoked {key_id}")
