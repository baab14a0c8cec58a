"""The ``relevo`` command line: thin commands over the same services as the web app."""

from __future__ import annotations

import click

from relevo import __version__
from relevo.cli.bench import bench
from relevo.cli.db import db
from relevo.cli.deliveries import deliveries
from relevo.cli.keys import keys
from relevo.cli.log import log
from relevo.cli.ope import ope
from relevo.cli.serve import demo, serve
from relevo.cli.worker import scheduler, worker


@click.group()
@click.version_option(__version__, prog_name="relevo")
def cli() -> None:
    """Relevo: real-time personalization and customer data platform."""


cli.add_command(serve)
cli.add_command(demo)
cli.add_command(keys)
cli.add_command(bench)
cli.add_command(deliveries)
cli.add_command(ope)
cli.add_command(log)
cli.add_command(worker)
cli.add_command(scheduler)
cli.add_command(db)


def main() -> None:
    cli()
