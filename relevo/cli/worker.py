"""``relevo worker`` and ``relevo scheduler``: the processing roles of a scale-out deployment."""

from __future__ import annotations

import os
import signal
import socket
import threading
from datetime import timedelta
from types import FrameType

import click

from relevo._runtime import tune_for_server
from relevo.cli.context import settings_from, store_option
from relevo.config import Settings
from relevo.logs import configure_logging
from relevo.pipeline.worker import Worker, run_scheduler
from relevo.services import Services, build_services


def _shared_services(settings: Settings, role: str) -> Services:
    services = build_services(settings)
    shared = (
        services.store.capabilities.shared_between_processes
        and services.log.capabilities.shared_between_processes
    )
    if not shared:
        services.close()
        raise click.UsageError(
            f"relevo {role} needs a store and an event log that other processes share: "
            "RELEVO_STORE_URL=postgresql://... and RELEVO_STREAM_URL=redis://... or nats://... "
            "(the embedded default runs everything in `relevo serve`)"
        )
    return services


def _until_signalled() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


@click.command()
@click.option("--name", default=None, help="This worker's name (default: host:pid).")
@click.option(
    "--lease-seconds",
    type=float,
    default=5.0,
    help="How long a dead worker's partitions wait before others take them over.",
)
@store_option
def worker(name: str | None, lease_seconds: float, store_url: str | None) -> None:
    """Apply the event log's partitions this worker leases (any number of workers)."""
    settings = settings_from(store_url=store_url)
    configure_logging(settings.log_level)
    services = _shared_services(settings, "worker")
    tune_for_server()
    stop = _until_signalled()
    try:
        name = name or f"{socket.gethostname()}:{os.getpid()}"
        Worker(services, name, timedelta(seconds=lease_seconds)).run(stop)
    finally:
        services.close()


@click.command()
@store_option
def scheduler(store_url: str | None) -> None:
    """Run segment timers (time-based exits) and segment backfills (any number of them)."""
    settings = settings_from(store_url=store_url)
    configure_logging(settings.log_level)
    services = _shared_services(settings, "scheduler")
    tune_for_server()
    stop = _until_signalled()
    try:
        run_scheduler(services, stop)
    finally:
        services.close()
