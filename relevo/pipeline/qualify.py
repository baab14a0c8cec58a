"""Qualifying profiles into segments as the processor applies events.

For each applied event: update the computed traits it can touch, find the segments whose inputs
changed (the index), evaluate only those, and turn membership changes into outbox effects
(``Segment Entered``/``Segment Exited``) written in the processor's transaction. Time-dependent
segments (sliding windows, ``now()``) also get a timer per profile, so a profile leaves "viewed
running shoes 3+ times in the last 7 days" on time, without a new event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from relevo.events.model import Event
from relevo.profiles import computed
from relevo.profiles.computed import ComputedTraitDef, TraitSet
from relevo.profiles.model import Profile
from relevo.segments.changes import MembershipChange
from relevo.segments.engine import reevaluate
from relevo.segments.index import SegmentIndex
from relevo.segments.model import Segment
from relevo.segments.plan import Plan, Planner
from relevo.store.base import OutboxRow

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"


@dataclass(frozen=True)
class Definitions:
    """One consistent snapshot of what the processor evaluates; swapped whole on reload."""

    computed: TraitSet
    index: SegmentIndex
    planner: Planner
    recheck: timedelta  # how often a segment using now() is evaluated again without events
    event_routes: frozenset[str] = frozenset()  # event names/types some destination receives
    # derived once, read per event: the computed traits timed segments read (by name, and
    # those that count days), and whether a timed segment uses now()
    timed_computed: TraitSet = field(default_factory=lambda: TraitSet(()))
    timed_names: frozenset[str] = frozenset()
    timed_days: frozenset[str] = frozenset()
    timed_uses_now: bool = False

    @classmethod
    def build(
        cls,
        traits: Sequence[ComputedTraitDef],
        segments: Iterable[Segment],
        recheck: timedelta,
        event_routes: frozenset[str] = frozenset(),
    ) -> Definitions:
        trait_set = TraitSet(traits)
        # traits whose value moves with time alone: windows slide; days_since_last counts days
        # even over a lifetime
        index = SegmentIndex(
            segments,
            frozenset(d.name for d in traits if d.windowed or d.kind == "days_since_last"),
        )
        used = index.computed_used_by(index.timed)
        timed = TraitSet(d for d in traits if d.name in used)
        return cls(
            trait_set,
            index,
            Planner(index, trait_set),
            recheck,
            event_routes,
            timed_computed=timed,
            timed_names=frozenset(d.name for d in timed),
            timed_days=frozenset(d.name for d in timed if d.kind == "days_since_last"),
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
        every_segment: bool = False,
        created: bool = False,
    ) -> None:
        """Fold ``event`` into the computed traits and evaluate the segments it can change
        (``every_segment``: all of them, for a profile that has just merged; ``created``: the
        profile is new, so it starts from the empty profile's memberships)."""
        defs = self.definitions
        if defs.routes_event(event):
            body = b'{"type":"event","profileId":%s,"event":%s}' % (
                _encoder.encode(profile.id),
                payload,
            )
            out.events.append(OutboxRow(now, "event", profile.id, body))
        opened: set[str] = set()
        changed = computed.update(defs.computed, profile, event, opened)
        if not defs.index.segments:
            return
        if every_segment:
            plan = defs.planner.for_names(defs.index.segments)
            self._evaluate(profile, plan, now, event.message_id, out)
            return
        traits = event.traits if event.type == "identify" else ()
        plan = defs.planner.for_event(traits, changed, created)
        # only a new bucket can bring a window's next change forward; any change, a day count's
        moved = (opened & defs.timed_names) | (changed & defs.timed_days)
        self._evaluate(profile, plan, now, event.message_id, out, None if created else moved)

    def on_timer(self, profile: Profile, now: datetime, out: Qualification) -> None:
        defs = self.definitions
        computed.prune(defs.computed, profile, now)
        self._evaluate(profile, defs.planner.for_names(defs.index.timed), now, "schedule", out)

    def on_backfill(
        self, profile: Profile, names: set[str], now: datetime, out: Qualification
    ) -> None:
        self._evaluate(profile, self.definitions.planner.for_names(names), now, "backfill", out)
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
        plan: Plan,
        now: datetime,
        cause: str,
        out: Qualification,
        moved: set[str] | None = None,
    ) -> None:
        """Carry out ``plan``; ``moved``: the timed computed traits whose next change this
        event may have brought forward (None: work the profile's timer out from scratch)."""
        defs = self.definitions
        segments = defs.index.segments
        if not profile.segments.keys() <= segments.keys():
            for stale in [n for n in profile.segments if n not in segments]:
                del profile.segments[stale]  # the segment was deleted; its members are cleared
        if plan.segments:
            values = computed.values(plan.computed, profile, now)
            data = plan.shape.data(profile, values, now)
            out.changes.extend(reevaluate(profile, plan.segments, data, now, cause))
        for name in plan.entered:
            profile.segments[name] = now
            out.changes.append(MembershipChange(profile.id, name, True, now, cause))
        if defs.index.timed:
            due = self._next_check(profile, now, moved)
            if moved is None or due != profile.next_check:  # unchanged: no timer write
                out.timers[profile.id] = due
                profile.next_check = due

    def _next_check(
        self, profile: Profile, now: datetime, moved: set[str] | None
    ) -> datetime | None:
        """When the profile's time-dependent segments must be evaluated again.

        From scratch, the earliest time a timed trait's value moves on its own (or the recheck
        of a ``now()`` rule). After an event only the traits in ``moved`` are looked at: folding
        an event into a bucket a window already has changes none of its expiries, and an
        event brings no other trait's next change forward. A due time left early (an event
        moved one later) only fires a check that finds nothing to do, and is then worked out
        from scratch.
        """
        defs = self.definitions
        if moved is None:
            due = computed.next_change(defs.timed_computed, profile, now)
        else:
            due = profile.next_check
            if moved:
                traits = defs.timed_computed.subset(frozenset(moved))
                candidate = computed.next_change(traits, profile, now)
                if candidate is not None:
                    due = candidate if due is None else min(due, candidate)
        if defs.timed_uses_now:
            recheck = now + defs.recheck
            due = recheck if due is None else min(due, recheck)
        return due
