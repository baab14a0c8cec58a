"""Qualifying profiles into segments as the processor applies events.

For each applied event: update the computed traits it can touch, find the segments whose inputs
changed (the index), evaluate only those, and turn membership changes into outbox effects
(``Segment Entered``/``Segment Exited``) written in the processor's transaction. Time-dependent
segments (sliding windows, ``now()``) also get a timer per profile, so a profile leaves "viewed
running shoes 3+ times in the last 7 days" on time, without a new event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from relevo.events.model import Event
from relevo.profiles import computed
from relevo.profiles.computed import ComputedTraitDef
from relevo.profiles.model import Profile
from relevo.segments.changes import MembershipChange
from relevo.segments.engine import reevaluate, rule_data
from relevo.segments.index import SegmentIndex
from relevo.segments.model import Segment
from relevo.store.base import OutboxRow

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"


@dataclass(frozen=True)
class Definitions:
    """One consistent snapshot of what the processor evaluates; swapped whole on reload."""

    computed: list[ComputedTraitDef]
    index: SegmentIndex
    recheck: timedelta  # how often a segment using now() is evaluated again without events
    event_routes: frozenset[str] = frozenset()  # event names/types some destination receives
    # derived once, read per event: the definitions by name, those timed segments read, and
    # whether a timed segment uses now()
    by_name: dict[str, ComputedTraitDef] = field(default_factory=dict)
    timed_computed: list[ComputedTraitDef] = field(default_factory=list)
    timed_uses_now: bool = False

    @classmethod
    def build(
        cls,
        traits: list[ComputedTraitDef],
        segments: Iterable[Segment],
        recheck: timedelta,
        event_routes: frozenset[str] = frozenset(),
    ) -> Definitions:
        # traits whose value moves with time alone: windows slide; days_since_last counts days
        # even over a lifetime
        timed = frozenset(d.name for d in traits if d.windowed or d.kind == "days_since_last")
        index = SegmentIndex(segments, timed)
        used = index.computed_used_by(index.timed)
        return cls(
            traits,
            index,
            recheck,
            event_routes,
            by_name={d.name: d for d in traits},
            timed_computed=[d for d in traits if d.name in used],
            timed_uses_now=any(index.segments[n].rule.uses_now for n in index.timed),
        )

    def routes_event(self, event: Event) -> bool:
        routes = self.event_routes
        return bool(routes) and (
            "*" in routes or event.type in routes or (event.event or event.name or "") in routes
        )


class MembershipPayload(msgspec.Struct, kw_only=True, rename="camel"):
    """The outbox body of a membership change (also what a webhook receives)."""

    type: str = "segment"
    event: str
    segment: str
    profile_id: str
    at: datetime
    cause: str


_encoder = msgspec.json.Encoder()


def outbox_row(change: MembershipChange) -> OutboxRow:
    payload = MembershipPayload(
        event=SEGMENT_ENTERED if change.entered else SEGMENT_EXITED,
        segment=change.segment,
        profile_id=change.profile_id,
        at=change.at,
        cause=change.cause,
    )
    return OutboxRow(change.at, "segment", change.profile_id, _encoder.encode(payload))


@dataclass
class Qualification:
    """What qualification produced during one processor cycle."""

    changes: list[MembershipChange] = field(default_factory=list)
    timers: dict[str, datetime | None] = field(default_factory=dict)
    events: list[OutboxRow] = field(default_factory=list)  # events destinations receive
    # memberships a backfill found unchanged: their rows are written again (no effect), so a
    # segment deleted and created again before its members were touched has them listed
    kept: list[MembershipChange] = field(default_factory=list)


class Qualifier:
    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions

    def on_event(
        self,
        profile: Profile,
        event: Event,
        payload: bytes,
        now: datetime,
        out: Qualification,
        *,
        every_segment: bool,
    ) -> None:
        """Fold ``event`` into the computed traits and evaluate the segments it can change
        (``every_segment``: all of them, for a profile that is new or has just merged)."""
        defs = self.definitions
        if defs.routes_event(event):
            body = b'{"type":"event","profileId":%s,"event":%s}' % (
                _encoder.encode(profile.id),
                payload,
            )
            out.events.append(OutboxRow(now, "event", profile.id, body))
        changed_computed = computed.update(defs.computed, profile, event)
        if not defs.index.segments:
            return
        if every_segment:
            self._evaluate(profile, set(defs.index.segments), now, event.message_id, out)
        else:
            traits = event.traits if event.type == "identify" else ()
            affected = defs.index.affected(traits, changed_computed)
            self._evaluate(profile, affected, now, event.message_id, out, changed_computed)

    def on_timer(self, profile: Profile, now: datetime, out: Qualification) -> None:
        defs = self.definitions
        computed.prune(defs.computed, profile, now)
        self._evaluate(profile, set(defs.index.timed), now, "schedule", out)

    def on_backfill(
        self, profile: Profile, names: set[str], now: datetime, out: Qualification
    ) -> None:
        self._evaluate(profile, names, now, "backfill", out)
        for name in names:
            entered = profile.segments.get(name)
            if entered is not None:
                out.kept.append(MembershipChange(profile.id, name, True, entered, "backfill"))

    def on_merged_away(self, merged: Profile, now: datetime, out: Qualification) -> None:
        """A profile merged into another leaves every segment it was in."""
        for name in list(merged.segments):
            if name in self.definitions.index.segments:  # no exit from a deleted segment
                out.changes.append(MembershipChange(merged.id, name, False, now, "merged"))
        merged.segments.clear()
        out.timers[merged.id] = None

    def _evaluate(
        self,
        profile: Profile,
        names: set[str],
        now: datetime,
        cause: str,
        out: Qualification,
        changed: set[str] | None = None,
    ) -> None:
        """Evaluate the named segments; ``changed``: the computed traits this event moved
        (None: work the profile's timer out from scratch)."""
        defs = self.definitions
        for stale in [n for n in profile.segments if n not in defs.index.segments]:
            del profile.segments[stale]  # the segment was deleted; its members table is cleared
        if names:
            # the segments, and only the computed traits they read, in one pass
            segments: list[Segment] = []
            wanted: set[str] = set()
            reads = defs.index.reads
            for name in names:
                found = reads.get(name)
                if found is not None:
                    segments.append(found[0])
                    wanted |= found[1]
            traits = (
                defs.computed  # a rule reading the whole computed root reads every trait
                if "" in wanted
                else [defs.by_name[c] for c in wanted if c in defs.by_name]
            )
            values = computed.values(traits, profile, now)
            data = rule_data(profile, values, now)
            out.changes.extend(reevaluate(profile, segments, data, now, cause))
        if defs.index.timed:
            due = self._next_check(profile, now, changed)
            if changed is None or due != profile.next_check:  # unchanged: no timer write
                out.timers[profile.id] = due
                profile.next_check = due

    def _next_check(
        self, profile: Profile, now: datetime, changed: set[str] | None
    ) -> datetime | None:
        """When the profile's time-dependent segments must be evaluated again.

        From scratch, the earliest time a timed trait's value moves on its own (or the recheck
        of a ``now()`` rule). After an event only the traits it moved are looked at: an event
        adds a bucket, which can bring that trait's next change forward, never the others'.
        A due time left early (the event moved one later) only fires a check that finds
        nothing to do, and is then worked out from scratch.
        """
        defs = self.definitions
        if changed is None:
            due = computed.next_change(defs.timed_computed, profile, now)
        else:
            due = profile.next_check
            moved = [d for d in defs.timed_computed if d.name in changed]
            candidate = computed.next_change(moved, profile, now) if moved else None
            if candidate is not None:
                due = candidate if due is None else min(due, candidate)
        if defs.timed_uses_now:
            recheck = now + defs.recheck
            due = recheck if due is None else min(due, recheck)
        return due
