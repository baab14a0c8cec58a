"""The processor: applies the event log to profiles, in order per partition, exactly once.

Each cycle reads what is new in every partition and applies it in ONE store transaction that
also records the new consumer offsets. A crash anywhere rolls the whole cycle back and the
next start re-reads from the committed offsets, so every event is applied exactly once.

An event that cannot be applied (a bug, a poison payload) fails its cycle; the cycle is then
replayed one event per transaction so only the poison event is set aside (``failed_events``)
and the rest of its partition keeps flowing.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from relevo._clock import Clock
from relevo.config import Settings
from relevo.decisions.caps import counter_keys, record_impression
from relevo.decisions.feedback import EVENT_KINDS, AttributionMap, feedback_of, remember_click
from relevo.events.model import Event, decode_event
from relevo.metrics import Metrics
from relevo.pipeline.memo import MemoView, StateMemo
from relevo.pipeline.qualify import Definitions, Qualification, Qualifier, outbox_row
from relevo.profiles.identifiers import Identifier, identifiers_of
from relevo.profiles.identity import Resolution, lookups, resolve
from relevo.profiles.model import Profile
from relevo.profiles.state import apply_event, merge_into
from relevo.profiles.suppression import suppression_hash
from relevo.store.base import (
    JournalEntry,
    ProcessorStore,
    StateTransaction,
    TimelineEntry,
    TransactionConflict,
)
from relevo.stream.base import EventLog, Record

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 0.05
TRIM_SLACK = 1.1  # trim a timeline once it is 10% over its limit, not on every event
MEMO_CAPACITY = 200_000  # profiles (and as many identifiers) remembered between cycles
DEFAULT_RECHECK = timedelta(hours=1)
TIMERS_PER_CYCLE = 1000
BACKFILL_CHUNK = 500
SUPPRESSIONS_SECONDS = 1.0  # how often a processor of a shared store re-reads erasures


@dataclass
class Backfill:
    """Progress of evaluating a new or changed segment over the existing profiles."""

    name: str
    version: str
    total: int = 0  # live profiles when it started (profiles made since are evaluated too)
    cursor: str | None = None
    done: int = 0
    finished: bool = False


def new_profile_id(event: Event) -> str:
    """Deterministic from the event that creates the profile, so a replay makes the same id."""
    digest = hashlib.blake2b(f"{event.source}\x1f{event.message_id}".encode(), digest_size=10)
    return f"prf_{digest.hexdigest()}"


@dataclass
class _Cycle:
    """What one transaction has loaded and changed, written back at its end."""

    view: MemoView
    now: datetime
    profiles: dict[str, Profile] = field(default_factory=dict)
    qualified: Qualification = field(default_factory=Qualification)
    timeline: list[tuple[str, TimelineEntry]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # profiles merged away in this cycle
    merges: int = 0
    refusals: int = 0

    @property
    def tx(self) -> StateTransaction:
        return self.view.tx

    def profile(self, profile_id: str, event: Event, created: bool) -> Profile:
        profile = self.profiles.get(profile_id)
        if profile is None:
            profile = None if created else self.view.profile(profile_id)
            if profile is None:
                profile = Profile(id=profile_id, created_at=event.received_at)
                self.view.add_profile(profile)
            self.profiles[profile_id] = profile
        return profile


class Processor:
    def __init__(
        self,
        store: ProcessorStore,
        log_: EventLog,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._log = log_
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._suppressed: set[str] = set()
        self._memo = StateMemo(MEMO_CAPACITY)
        # between cycles the memo is only valid if nobody else writes the store
        self._keep_memo = not store.capabilities.shared_between_processes
        self._qualifier = Qualifier(Definitions.build([], [], DEFAULT_RECHECK))
        self._backfills: dict[str, Backfill] = {}
        self._attribution: AttributionMap = {}
        # the partitions this processor may consume (a worker's leases); None: every one
        self.owned: Callable[[], frozenset[int]] | None = None
        self._held: frozenset[int] = frozenset()
        # whether cycles also run due segment timers and segment backfills (scale-out: the
        # scheduler role does, workers do not)
        self.runs_timers = True
        self.runs_backfills = True
        # called after each commit with the ids of the profiles it changed or merged away
        self.on_commit: list[Callable[[list[str]], None]] = []
        self._offsets: dict[int, int] = {}
        self._cycle_size = settings.process_batch_size
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._commands = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.processing_lag.set_function(self.lag)

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self) -> None:
        """Read the committed offsets and the suppression list (before the first cycle)."""
        with self._store.transaction() as tx:
            committed = tx.offsets(self._log.name)
        self._offsets = {p: committed.get(p, 0) for p in range(self._log.partitions)}
        self._suppressed = self._store.suppressed()

    def start(self) -> None:
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relevo-processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def lag(self) -> int:
        """Events in the log not yet applied (offsets are dense per partition)."""
        ends = self._log.end_offsets()
        mine = self._consumed()
        return sum(max(0, end - self._offsets.get(p, 0)) for p, end in ends.items() if p in mine)

    def caught_up(self) -> bool:
        ends = self._log.end_offsets()
        mine = self._consumed()
        return all(end <= self._offsets.get(p, 0) for p, end in ends.items() if p in mine)

    def _reload_offsets(self, partitions: list[int]) -> None:
        with self._store.transaction() as tx:
            committed = tx.offsets(self._log.name)
        for partition in partitions:
            self._offsets[partition] = committed.get(partition, 0)

    def _consumed(self) -> frozenset[int]:
        return frozenset(range(self._log.partitions)) if self.owned is None else self._held

    def _partitions(self) -> list[int]:
        """The partitions to read this cycle. A partition newly taken over starts from the
        offset its previous owner committed, not from what this worker saw long ago."""
        if self.owned is None:
            return list(range(self._log.partitions))
        owned = self.owned()
        taken = owned - self._held
        if taken:
            self._reload_offsets(sorted(taken))
            self._memo.clear()
        self._held = owned
        return sorted(owned)

    def call(self, command: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``command`` on the processor thread, between cycles (the only writer)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._commands.put((command, future))
        return future

    def _run(self) -> None:
        suppressions_read = time.monotonic()
        while not self._stop.is_set():
            self._run_commands()
            if not self._keep_memo and time.monotonic() - suppressions_read > SUPPRESSIONS_SECONDS:
                # another process may have erased someone: its suppressions apply here too
                self._suppressed = self._store.suppressed()
                suppressions_read = time.monotonic()
            try:
                applied = self.run_once()
            except Exception:  # process boundary: log, back off, try the cycle again
                log.exception("processor cycle failed")
                self._stop.wait(1.0)
                continue
            # a backfill chunk after every cycle, not only when idle: under a steady stream of
            # events a new segment must still fill up
            backfilled = self._run_backfill_safely() if self.runs_backfills else 0
            if applied == 0 and backfilled == 0:
                mine = self._consumed()  # another worker's partitions are not this one's news
                offsets = {p: o for p, o in self._offsets.items() if p in mine}
                self._log.wait(offsets, IDLE_WAIT_SECONDS)

    def _run_backfill_safely(self) -> int:
        try:
            return self.run_backfill()
        except Exception:  # process boundary: a failing backfill must not stop processing
            self._memo.clear()
            log.exception("segment backfill failed; it will be retried")
            self._stop.wait(1.0)
            return 0

    def _run_commands(self) -> None:
        while True:
            try:
                command, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(command())
                except Exception as exc:  # handed back to the caller
                    future.set_exception(exc)

    # -- applying -------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Apply what is new in every partition; returns the number of records consumed."""
        partitions = self._partitions()
        per_partition = max(1, self._cycle_size // max(1, len(partitions)))
        batches = [self._log.read(p, self._offsets.get(p, 0), per_partition) for p in partitions]
        records = [r for batch in batches for r in batch]
        self._cycle_size = self._next_cycle_size(batches, per_partition, len(records))
        if not records and not self._timers_due():
            return 0
        try:
            self._apply(records)
        except TransactionConflict as exc:
            # another transaction won (a worker that took a partition over, or one that
            # touched the same profiles): nothing was committed; start again from the store
            log.info(
                "cycle of %d events conflicted (%s); retrying from the store", len(records), exc
            )
            self._memo.clear()
            self._reload_offsets(partitions)
            return 0
        except Exception:
            self._memo.clear()
            log.warning("cycle of %d events failed; applying them one by one", len(records))
            for record in records:
                self._apply_alone(record)
        return len(records)

    def _next_cycle_size(self, batches: list[list[Record]], share: int, read: int) -> int:
        """Catching up on a backlog, cycles grow: after a cycle in which every partition gave
        its full share and at least ``catch_up_batch_size`` more events wait, the next may take
        twice as many, up to that size (larger transactions rewrite the same pages less often).
        Otherwise, and once caught up, cycles are small, so an event waits for little work
        ahead of it; a burst smaller than a catch-up cycle never makes them grow."""
        settings = self._settings
        base, ceiling = settings.process_batch_size, settings.catch_up_batch_size
        full = bool(batches) and all(len(batch) == share for batch in batches)
        if not full or ceiling <= base or self.lag() - read < ceiling:
            return base
        return min(ceiling, 2 * self._cycle_size)

    def _apply(self, records: list[Record]) -> None:
        applied = suppressed = 0
        if not self._keep_memo:
            self._memo.clear()
        with self._store.transaction() as tx:
            cycle = _Cycle(MemoView(tx, self._memo), self._clock.now())
            self._run_timers(cycle)
            events = [decode_event(record.payload) for record in records]
            identifiers = [identifiers_of(event) for event in events]
            cycle.view.prefetch({i for ids in identifiers for i in lookups(ids)})
            for record, event, ids in zip(records, events, identifiers, strict=True):
                if self._apply_event(cycle, event, record.payload, ids):
                    applied += 1
                else:
                    suppressed += 1
            self._write_back(cycle)
            new_offsets = self._advance(tx, records)
        self._offsets.update(new_offsets)
        self._count(applied, suppressed, cycle)
        self._committed(cycle)

    def _committed(self, cycle: _Cycle) -> None:
        if self.on_commit:
            changed = [*cycle.profiles, *cycle.merged]
            for listener in self.on_commit:
                listener(changed)

    def _apply_alone(self, record: Record) -> None:
        try:
            self._apply([record])
        except TransactionConflict:
            raise  # not the event's fault: the whole cycle is retried
        except Exception as exc:
            self._memo.clear()
            log.exception("event at %d/%d set aside", record.partition, record.offset)
            with self._store.transaction() as tx:
                tx.record_failure(
                    self._log.name,
                    record.partition,
                    record.offset,
                    repr(exc),
                    record.payload,
                    self._clock.now(),
                )
                new_offsets = self._advance(tx, [record])
            self._offsets.update(new_offsets)
            self._metrics.events_failed.inc()

    def _advance(self, tx: StateTransaction, records: list[Record]) -> dict[int, int]:
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = record.offset
        for partition, offset in last.items():
            # compare-and-set where other workers share the store: if one took the partition
            # over and committed, this cycle fails whole instead of applying those events a
            # second time (a single-writer store has no one to fence off: no extra read)
            expected = None if self._keep_memo else self._offsets.get(partition, 0)
            tx.set_offset(self._log.name, partition, offset, expected=expected)
        return last

    def _apply_event(
        self, cycle: _Cycle, event: Event, payload: bytes, identifiers: list[Identifier]
    ) -> bool:
        if self._suppressed and any(suppression_hash(i) in self._suppressed for i in identifiers):
            return False
        resolution = resolve(identifiers, cycle.view, self._settings, lambda: new_profile_id(event))
        profile = cycle.profile(resolution.profile_id, event, resolution.created)
        self._join(cycle, profile, resolution, event)
        if event.event is not None and (event.event in EVENT_KINDS or self._attribution):
            self._feedback(cycle, profile, event)
        apply_event(profile, event)
        self._qualifier.on_event(
            profile,
            event,
            payload,
            cycle.now,
            cycle.qualified,
            every_segment=bool(resolution.merges),
            created=resolution.created,
        )
        cycle.timeline.append(
            (profile.id, TimelineEntry(event.timestamp, event.message_id, payload))
        )
        profile.timeline_size += 1
        return True

    def _feedback(self, cycle: _Cycle, profile: Profile, event: Event) -> None:
        """Join impressions, clicks and conversions to their decisions, once each; an
        impression counts towards frequency caps, budgets and placement limits."""
        for feedback in feedback_of(event, profile, self._attribution):
            if not cycle.tx.record_feedback(profile.id, feedback):
                continue  # a repeat of a fact already recorded
            remember_click(profile, feedback)
            if feedback.kind != "impression":
                continue
            at = feedback.at.timestamp()
            record_impression(profile.exposures, feedback.offer, at)
            keys = counter_keys("offer", feedback.offer, at)
            if feedback.placement:
                record_impression(profile.exposures, f"placement:{feedback.placement}", at)
                keys += counter_keys("placement", feedback.placement, at)
            cycle.tx.count_impressions(keys)

    def set_attribution(self, attribution: AttributionMap) -> None:
        """Which events count as conversions of which placements (through ``call``)."""
        self._attribution = attribution

    def _join(self, cycle: _Cycle, profile: Profile, resolution: Resolution, event: Event) -> None:
        tx = cycle.tx
        at = event.timestamp
        for step in resolution.merges:
            merged = cycle.profile(step.merged, event, created=False)
            merge_into(profile, merged)
            self._qualifier.on_merged_away(merged, cycle.now, cycle.qualified)
            cycle.timeline = [
                (profile.id if pid == merged.id else pid, entry) for pid, entry in cycle.timeline
            ]
            cycle.profiles.pop(merged.id, None)
            cycle.merged.append(merged.id)
            cycle.view.absorb(profile.id, merged.id)
            tx.journal(
                JournalEntry(
                    at,
                    "merged",
                    profile.id,
                    merged.id,
                    str(step.identifier),
                    f"{step.identifier} is shared by both profiles",
                    event.message_id,
                    event.source,
                )
            )
            cycle.merges += 1
        for identifier in resolution.links:
            cycle.view.link(identifier, profile.id, at)
        for refusal in resolution.refusals:
            tx.journal(
                JournalEntry(
                    at,
                    "refused",
                    profile.id,
                    refusal.other_profile,
                    str(refusal.identifier),
                    refusal.reason,
                    event.message_id,
                    event.source,
                )
            )
            cycle.refusals += 1

    def _write_back(self, cycle: _Cycle) -> None:
        limit = self._settings.timeline_limit
        cycle.view.flush_links()
        cycle.tx.append_timeline(cycle.timeline)
        for profile in cycle.profiles.values():
            if profile.timeline_size > limit * TRIM_SLACK:
                profile.timeline_size -= cycle.tx.trim_timeline(profile.id, limit)
        cycle.tx.save(list(cycle.profiles.values()))
        qualified = cycle.qualified
        if qualified.changes or qualified.kept:
            cycle.tx.write_memberships([*qualified.changes, *qualified.kept])
        if qualified.changes or qualified.events:
            cycle.tx.append_outbox([*(outbox_row(c) for c in qualified.changes), *qualified.events])
        if qualified.timers:
            cycle.tx.set_timers(qualified.timers)

    def _count(self, applied: int, suppressed: int, cycle: _Cycle) -> None:
        m = self._metrics
        changes = cycle.qualified.changes
        if changes:
            entered = sum(1 for change in changes if change.entered)
            for label, count in (("entered", entered), ("exited", len(changes) - entered)):
                if count:
                    m.segment_changes.labels(label).inc(count)
        if applied:
            m.events_processed.inc(applied)
        if suppressed:
            m.events_suppressed.inc(suppressed)
        if cycle.merges:
            m.identity_merges.labels("merged").inc(cycle.merges)
        if cycle.refusals:
            m.identity_merges.labels("refused").inc(cycle.refusals)

    # -- segments -------------------------------------------------------------------------------

    def reload(self, definitions: Definitions, backfill: dict[str, str]) -> None:
        """Swap the definitions (on the processor thread, through ``call``) and start a
        backfill of each named segment (name -> version) over the existing profiles."""
        self._qualifier = Qualifier(definitions)
        for name in list(self._backfills):
            if name not in definitions.index.segments:
                del self._backfills[name]
        for name, version in backfill.items():
            running = self._backfills.get(name)
            if running is None or running.version != version:  # else: carry on where it is
                self._backfills[name] = Backfill(name, version, total=self._store.profile_count())

    def backfills(self) -> dict[str, Backfill]:
        return dict(self._backfills)

    def _timers_due(self) -> bool:
        if not self.runs_timers or not self._qualifier.definitions.index.timed:
            return False
        due = self._store.next_timer_at()
        return due is not None and due <= self._clock.now()

    def _run_timers(self, cycle: _Cycle) -> None:
        if not self.runs_timers or not self._qualifier.definitions.index.timed:
            return
        for profile_id in cycle.tx.due_timers(cycle.now, TIMERS_PER_CYCLE):
            profile = cycle.profiles.get(profile_id) or cycle.view.profile(profile_id)
            if profile is None:  # erased or merged away since
                cycle.qualified.timers[profile_id] = None
                continue
            cycle.profiles[profile_id] = profile
            self._qualifier.on_timer(profile, cycle.now, cycle.qualified)

    def run_backfill(self, limit: int = BACKFILL_CHUNK) -> int:
        """Evaluate the next chunk of profiles for the segments being backfilled."""
        if not self._backfills:
            return 0
        job = next(iter(self._backfills.values()))
        ids = self._store.profile_ids(job.cursor, limit)
        if not ids:
            self._store.mark_backfilled(job.name, job.version)
            job.finished = True
            del self._backfills[job.name]
            log.info("segment %s backfilled over %d profiles", job.name, job.done)
            return 0
        if not self._keep_memo:
            self._memo.clear()
        with self._store.transaction() as tx:
            cycle = _Cycle(MemoView(tx, self._memo), self._clock.now())
            for profile_id in ids:
                profile = cycle.view.profile(profile_id)
                if profile is not None:
                    cycle.profiles[profile_id] = profile
                    self._qualifier.on_backfill(profile, {job.name}, cycle.now, cycle.qualified)
            self._write_back(cycle)
        job.cursor = ids[-1]
        job.done += len(ids)
        self._count(0, 0, cycle)
        self._committed(cycle)
        return len(ids)

    # -- erasure --------------------------------------------------------------------------------

    def suppress(self, hashes: list[str]) -> None:
        """Called on the processor thread (through ``call``) after an erasure."""
        self._suppressed.update(hashes)
        self._memo.clear()
