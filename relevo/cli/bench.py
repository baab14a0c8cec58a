"""``relevo bench``: the benchmarks in ``bench/``."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Run a benchmark; prints a table and writes JSON results."""


@bench.command("ingest")
@click.option("--events", type=int, default=200_000, help="Events to send at full speed.")
@click.option("--batch", type=int, default=100, help="Events per HTTP request.")
@click.option("--connections", type=int, default=8, help="Concurrent HTTP connections.")
@click.option("--out", default="bench/results/ingest.json", help="Where to write the JSON.")
def ingest(events: int, batch: int, connections: int, out: str) -> None:
    """Durable ingest over HTTP and processing into profiles, end to end; freshness."""
    from bench.ingest import run

    run(events=events, batch=batch, connections=connections, out=out)
