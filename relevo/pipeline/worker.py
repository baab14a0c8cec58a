"""The worker and scheduler roles of a scale-out deployment.

A worker (``relevo worker``, any number of them) applies the partitions of the event log its
leases give it (see ``relevo.pipeline.ownership``). Two singletons run on whichever worker the
same rendezvous picks: the learner (one cursor over the feedback) and the destination
dispatcher (one sender per delivery). A scheduler (``relevo scheduler``) runs segment timers
(time-based exits) and segment backfills; it consumes no partition, so several may run
(their timer claims skip each other's rows).

Both watch the stored definitions (segments, computed traits, destinations, the catalog) and
reload what an API node changed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from relevo.pipeline.ownership import Ownership
from relevo.services import Services

log = logging.getLogger(__name__)

SINGLETONS = "singletons"
LEARNER, DISPATCHER = 0, 1
DEFINITIONS_SECONDS = 1.0
INSTALL_TIMEOUT = 60.0  # seconds the processor thread may take to get to a reload
Stamp = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, bytes], ...]]
# the first look always reloads unless nothing is defined (then there is nothing to reload)
NOT_LOOKED: Stamp = ((), ())


class Worker:
    def __init__(self, services: Services, name: str, ttl: timedelta) -> None:
        self.services = services
        self.name = name
        self.ttl = ttl
        log_ = services.log
        self.partitions = Ownership(services.store, log_.name, name, log_.partitions, ttl)
        self.singletons = Ownership(services.store, SINGLETONS, name, 2, ttl)
        self._dispatching: _DispatcherThread | None = None
        self._learning = False

    def run(self, stop: threading.Event) -> None:
        services = self.services
        processor = services.processor
        processor.owned = lambda: self.partitions.partitions
        processor.runs_timers = False
        processor.runs_backfills = False
        self.renew()
        services.log.start()
        services.decisions.start()
        processor.start()
        seen = NOT_LOOKED  # what build_services loaded may be older than the first look
        try:
            while not stop.wait(self.ttl.total_seconds() / 3):
                try:
                    self.renew()
                    seen = self._reload_definitions(seen)
                except Exception:  # process boundary: a store hiccup must not end the worker
                    log.exception("worker %s could not renew its leases; retrying", self.name)
        finally:
            self._set_learner(False)
            self._set_dispatcher(False)

    def renew(self) -> None:
        now = self.services.clock.now()
        owned = self.partitions.renew(now)
        held = self.singletons.renew(now)
        self._set_learner(LEARNER in held)
        self._set_dispatcher(DISPATCHER in held)
        log.debug("worker %s holds partitions %s", self.name, sorted(owned))

    def _reload_definitions(self, seen: Stamp) -> Stamp:
        return reload_definitions(self.services, seen)

    def _set_learner(self, on: bool) -> None:
        if on and not self._learning:
            self.services.learner.start()
        elif not on and self._learning:
            self.services.learner.stop()
        self._learning = on

    def _set_dispatcher(self, on: bool) -> None:
        if on and self._dispatching is None:
            self._dispatching = _DispatcherThread(self.services)
        elif not on and self._dispatching is not None:
            self._dispatching.stop()
            self._dispatching = None


class _DispatcherThread:
    """The destination dispatcher (asyncio) on its own thread and event loop."""

    def __init__(self, services: Services) -> None:
        self._dispatcher = services.dispatcher()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="relevo-dispatcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._loop.run_until_complete(self._dispatcher.run())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._dispatcher.stop)
        self._thread.join(timeout=30)


def run_scheduler(services: Services, stop: threading.Event) -> None:
    """Segment timers and backfills, on no partition."""
    processor = services.processor
    processor.owned = frozenset
    services.log.start()
    processor.start()
    seen = NOT_LOOKED  # what build_services loaded may be older than the first look
    while not stop.wait(DEFINITIONS_SECONDS):
        try:
            seen = reload_definitions(services, seen)
        except Exception:  # process boundary: a store hiccup must not end the scheduler
            log.exception("the scheduler could not read the definitions; retrying")


def definitions_stamp(services: Services) -> Stamp:
    return (services.segments.stamp(), services.destinations.stamp())


def reload_definitions(services: Services, seen: Stamp) -> Stamp:
    """Reload segments and destinations if another process changed them. The stamp of what
    is installed now: a reload that failed is tried again at the next look."""
    stamp = definitions_stamp(services)
    if stamp == seen:
        return seen
    services.destinations.forget_cached()
    installed = services.processor.call(services.segments.install)  # routes may change too
    try:
        installed.result(timeout=INSTALL_TIMEOUT)
    except Exception:  # the processor thread could not compile or read them: not yet
        log.exception("reloading the definitions failed; trying again")
        return seen
    log.info("definitions reloaded: %d segments", len(stamp[0]))
    return stamp
