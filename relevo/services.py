"""The services of one Relevo node, built from settings: used by the web app and the CLI."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from relevo._clock import Clock, SystemClock
from relevo.channels.retry import RetryPolicy
from relevo.channels.ssrf import OutboundPolicy
from relevo.collect.service import CollectService
from relevo.config import Settings
from relevo.decisions.service import DecisionService, attribution_of
from relevo.destinations.dispatch import Dispatcher
from relevo.destinations.service import DestinationService
from relevo.errors import ValidationError
from relevo.keys import KeyRing
from relevo.metrics import Metrics
from relevo.pipeline.learner import Learner
from relevo.pipeline.processor import Processor
from relevo.profiles import computed
from relevo.profiles.cache import ProfileCache
from relevo.profiles.changes import LocalChanges, ProfileChanges
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile
from relevo.profiles.service import ProfileService
from relevo.ratelimit import LocalLimiter, NoLimit, RateLimiter
from relevo.segments.service import SegmentService
from relevo.store.base import Store
from relevo.store.registry import open_store
from relevo.stream.base import EventLog
from relevo.stream.registry import open_log

PROFILE_ID = "profile"  # an identifier type naming a profile by its id (decide by profileId)


@dataclass
class Services:
    settings: Settings
    clock: Clock
    metrics: Metrics
    store: Store
    log: EventLog
    keys: KeyRing
    processor: Processor
    collect: CollectService
    profiles: ProfileService
    segments: SegmentService
    destinations: DestinationService
    decisions: DecisionService
    learner: Learner
    changes: ProfileChanges
    limiter: RateLimiter

    def dispatcher(self) -> Dispatcher:
        retry = RetryPolicy(
            base_delay=timedelta(seconds=self.settings.delivery_retry_base_seconds),
            max_delay=timedelta(seconds=self.settings.delivery_retry_max_seconds),
            max_age=timedelta(seconds=self.settings.delivery_retry_budget_seconds),
        )
        return Dispatcher(self.store, self.destinations, self.clock, self.metrics, retry)

    def start(self, *, process: bool = True) -> None:
        """Open the log for appends and, unless told not to, start the processor."""
        self.log.start()
        self.decisions.start()
        if process:
            self.processor.start()
            self.learner.start()

    def close(self) -> None:
        self.learner.stop()
        self.processor.stop()
        self.decisions.close()
        self.changes.close()
        self.log.close()
        self.store.close()


def outbound_policy(settings: Settings) -> OutboundPolicy:
    hosts = [h for h in settings.outbound_allow_hosts if not _is_network(h)]
    networks = [h for h in settings.outbound_allow_hosts if _is_network(h)]
    return OutboundPolicy.from_strings(hosts, networks)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def run_here(command: Callable[[], Any]) -> Future[Any]:
    """Run ``command`` now, on this thread, as a completed future (the API role's stand-in
    for ``Processor.call``)."""
    future: Future[Any] = Future()
    try:
        future.set_result(command())
    except Exception as exc:  # handed back to the caller, as Processor.call does
        future.set_exception(exc)
    return future


def profile_changes(url: str) -> ProfileChanges:
    """Where profile change notices go, by URL: ``memory://`` or ``redis://...``."""
    scheme = url.split(":", 1)[0]
    if scheme == "memory":
        return LocalChanges()
    if scheme in ("redis", "rediss"):
        from relevo.store.redis_changes import RedisChanges

        return RedisChanges(url)
    raise ValidationError(f"unknown cache URL scheme {scheme!r} (supported: memory, redis)")


def rate_limiter(settings: Settings) -> RateLimiter:
    """Per-key request limits: none, in this process, or shared through Redis."""
    rate = settings.rate_limit_per_second
    if rate is None:
        return NoLimit()
    if settings.cache_url.split(":", 1)[0] in ("redis", "rediss"):
        from relevo.store.redis_ratelimit import RedisLimiter

        return RedisLimiter(settings.cache_url, rate)
    return LocalLimiter(rate)


def build_services(
    settings: Settings, clock: Clock | None = None, *, processing: bool = True
) -> Services:
    """The node's services. ``processing=False`` (the API role): no processor thread will run
    here, so changes meant for it (definitions, erasures) are made on the caller's thread;
    the workers that process pick them up from the store."""
    clock = clock or SystemClock()
    metrics = Metrics()
    store = open_store(settings.store_url)
    try:
        store.migrate()
        log = open_log(settings, clock)
    except BaseException:
        store.close()
        raise
    try:
        return _wire(settings, clock, metrics, store, log, processing)
    except BaseException:  # e.g. a definitions file with an error: close what was opened
        log.close()
        store.close()
        raise


def _wire(
    settings: Settings,
    clock: Clock,
    metrics: Metrics,
    store: Store,
    log: EventLog,
    processing: bool,
) -> Services:
    keys = KeyRing(store, clock)
    processor = Processor(store, log, settings, clock, metrics)
    on_processor = processor.call if processing else run_here
    destinations = DestinationService(store, clock, outbound_policy(settings))
    segments = SegmentService(
        store,
        processor,
        clock,
        timedelta(seconds=settings.segment_recheck_seconds),
        on_processor,
        destinations.event_routes,
    )
    destinations.on_change = segments.reload
    directory = Path(settings.definitions_dir) if settings.definitions_dir else None
    segments.load(directory)

    def computed_values(profile: Profile, now: datetime) -> dict[str, Any]:
        return computed.values(segments.computed_traits, profile, now)

    def find(identifier: Identifier) -> Profile | None:
        return store.find(identifier.value if identifier.type == PROFILE_ID else identifier)

    limiter = rate_limiter(settings)
    cache = ProfileCache(find)
    changes = profile_changes(settings.cache_url)
    processor.on_commit.append(changes.publish)
    changes.subscribe(cache.changed)
    decisions = DecisionService(
        store,
        cache,
        clock,
        computed_values,
        settings.holdout_percent,
        on_catalog=lambda catalog: processor.set_attribution(attribution_of(catalog)),
    )
    decisions.load(directory)

    def suppress(hashes: list[str]) -> None:
        processor.suppress(hashes)
        cache.clear()

    return Services(
        settings=settings,
        clock=clock,
        metrics=metrics,
        store=store,
        log=log,
        keys=keys,
        processor=processor,
        collect=CollectService(settings, log, keys, clock, metrics, limiter),
        profiles=ProfileService(
            store,
            store,
            log,
            clock,
            on_processor,
            suppress,
            lambda profile: computed_values(profile, clock.now()),
        ),
        segments=segments,
        destinations=destinations,
        decisions=decisions,
        learner=Learner(store, decisions.catalog, clock),
        changes=changes,
        limiter=limiter,
    )
