"""``relevo log copy``: copy an event log into another (embedded to Redis or NATS, say).

State is derived from the log, so moving a deployment from the embedded default to
PostgreSQL and a broker is: migrate the new store, copy the log, start workers; they rebuild
every profile, segment membership and computed trait from the events. Copying is idempotent:
events keep their messageId, so a second run is deduplicated (within the dedup window).
"""

from __future__ import annotations

import asyncio

import click

from relevo._clock import SystemClock
from relevo.cli.context import settings_from
from relevo.collect.service import append_of
from relevo.events.model import decode_event
from relevo.stream.registry import open_log

BATCH = 500


@click.group()
def log() -> None:
    """The event log."""


@log.command("copy")
@click.option("--from", "source", required=True, help="The log to read (its stream URL).")
@click.option("--to", "target", required=True, help="The log to append to (its stream URL).")
@click.option(
    "--store-url",
    default=None,
    help="The store an embedded:// log sits beside (default: the configured one).",
)
def copy(source: str, target: str, store_url: str | None) -> None:
    """Append every event of one log to another, partition by partition, in order."""
    settings = settings_from(store_url=store_url)
    clock = SystemClock()
    reader = open_log(settings.model_copy(update={"stream_url": source}), clock)
    writer = open_log(settings.model_copy(update={"stream_url": target}), clock)
    copied = duplicates = 0
    try:
        reader.start()
        writer.start()
        for partition in range(reader.partitions):
            after = 0
            while records := reader.read(partition, after, BATCH):
                items = [append_of(decode_event(r.payload), writer.partitions) for r in records]
                outcome = asyncio.run(writer.append(items))
                copied += outcome.accepted
                duplicates += outcome.duplicates
                after = records[-1].offset
    finally:
        writer.close()
        reader.close()
    click.echo(f"copied {copied} events ({duplicates} already there)")
