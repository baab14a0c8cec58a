"""The services of one Relevo node, built from settings: used by the web app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from relevo._clock import Clock, SystemClock
from relevo.collect.service import CollectService
from relevo.config import Settings
from relevo.keys import KeyRing
from relevo.metrics import Metrics
from relevo.pipeline.processor import Processor
from relevo.profiles.service import ProfileService
from relevo.store.registry import open_store
from relevo.store.sqlite import SQLiteStore
from relevo.stream.base import EventLog
from relevo.stream.registry import open_log


@dataclass
class Services:
    settings: Settings
    clock: Clock
    metrics: Metrics
    store: SQLiteStore
    log: EventLog
    keys: KeyRing
    processor: Processor
    collect: CollectService
    profiles: ProfileService

    def start(self, *, process: bool = True) -> None:
        """Open the log for appends and, unless told not to, start the processor."""
        self.log.start()
        if process:
            self.processor.start()

    def close(self) -> None:
        self.processor.stop()
        self.log.close()
        self.store.close()


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    metrics = Metrics()
    store = open_store(settings.store_url)
    store.migrate()
    log = open_log(settings, clock)
    keys = KeyRing(store, clock)
    processor = Processor(store, log, settings, clock, metrics)
    return Services(
        settings=settings,
        clock=clock,
        metrics=metrics,
        store=store,
        log=log,
        keys=keys,
        processor=processor,
        collect=CollectService(settings, log, keys, clock, metrics),
        profiles=ProfileService(store, store, log, clock, processor.call, processor.suppress),
    )
