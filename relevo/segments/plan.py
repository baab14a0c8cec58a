"""Evaluation plans: what evaluating a profile after one kind of change takes.

A plan names the segments to evaluate (in definition order), the computed traits their rules
read and the parts of the profile they see. It depends only on which inputs changed, so it is
worked out once per kind of change and definitions snapshot, and reused.

A new profile starts from the empty profile, whose memberships are worked out once: a segment
that reads only traits and computed traits (no profile fact, no ``now()``) keeps its value on
the empty profile until one of its inputs changes. So a new profile evaluates the segments its
first event can change, and those that read profile facts or the clock; it is in the other
segments exactly if the empty profile is.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from relevo.profiles import computed
from relevo.profiles.computed import TraitSet
from relevo.profiles.model import Profile
from relevo.segments.engine import DataShape, rule_data
from relevo.segments.index import SegmentIndex
from relevo.segments.model import Segment

PLANS_KEPT = 4096  # plans remembered per snapshot (the kinds of change seen are few)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Plan:
    segments: tuple[Segment, ...]
    computed: TraitSet  # the traits whose values the rules read
    shape: DataShape
    entered: tuple[str, ...] = ()  # a new profile is in these with nothing to evaluate


class Planner:
    def __init__(self, index: SegmentIndex, traits: TraitSet) -> None:
        self._index = index
        self._traits = traits
        self._by_name = {d.name: d for d in traits}
        self._order = {name: n for n, name in enumerate(index.segments)}
        self._plans: dict[Hashable, Plan] = {}
        moving = {s.name for s in index.segments.values() if s.rule.uses_now} | index.every_event
        empty = Profile(id="", created_at=_EPOCH)
        data = rule_data(empty, computed.values(traits, empty, _EPOCH), _EPOCH)
        self._moving = frozenset(moving)
        self._empty_members = frozenset(
            name
            for name, segment in index.segments.items()
            if name not in moving and segment.rule.predicate(data)
        )

    def for_names(self, names: Iterable[str]) -> Plan:
        """Evaluate the named segments (a timer, a backfill, a merged profile)."""
        key = frozenset(names)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._remember(key, self._plan(key))
        return plan

    def for_event(self, traits: Collection[str], changed: Collection[str], created: bool) -> Plan:
        """After an event that set ``traits`` and moved the computed traits ``changed``, on
        a profile it ``created`` or on an existing one."""
        index = self._index
        # the plan depends on the inputs some segment reads, and on whether any changed
        key = (
            index.trait_keys.intersection(traits),
            bool(traits),
            index.computed_keys.intersection(changed),
            bool(changed),
            created,
        )
        plan = self._plans.get(key)
        if plan is None:
            names = index.affected(traits, changed)
            if not created:
                plan = self._plan(names)
            else:
                names |= self._moving
                entered = sorted(self._empty_members - names, key=self._order.__getitem__)
                plan = self._plan(names, tuple(entered))
            self._remember(key, plan)
        return plan

    def _plan(self, names: Collection[str], entered: tuple[str, ...] = ()) -> Plan:
        index = self._index
        segments = tuple(sorted((index.segments[n] for n in names), key=self._order_of))
        wanted: set[str] = set()
        for name in names:
            wanted |= index.reads[name][1]
        traits = (
            self._traits  # a rule reading the whole computed root reads every trait
            if "" in wanted
            else TraitSet(self._by_name[c] for c in sorted(wanted) if c in self._by_name)
        )
        return Plan(segments, traits, DataShape.read_by(segments), entered)

    def _order_of(self, segment: Segment) -> int:
        return self._order[segment.name]

    def _remember(self, key: Hashable, plan: Plan) -> Plan:
        if len(self._plans) >= PLANS_KEPT:
            self._plans.clear()
        self._plans[key] = plan
        return plan
