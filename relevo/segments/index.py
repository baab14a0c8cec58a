"""Which segments an event can change: an index from inputs (traits, computed traits, profile
facts) to the segments that read them, so only those are evaluated again."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from relevo.segments.model import Segment


class SegmentIndex:
    def __init__(self, segments: Iterable[Segment], windowed_computed: frozenset[str]) -> None:
        self.segments: dict[str, Segment] = {s.name: s for s in segments}
        self._by_trait: dict[str, set[str]] = defaultdict(set)
        self._by_computed: dict[str, set[str]] = defaultdict(set)
        self.every_event: frozenset[str]
        self.timed: frozenset[str]
        every: set[str] = set()
        timed: set[str] = set()
        for segment in self.segments.values():
            for path in segment.rule.fields:
                root, _, key = path.partition(".")
                if root == "traits":
                    self._by_trait[key].add(segment.name)
                elif root == "computed":
                    self._by_computed[key].add(segment.name)
                    if key in windowed_computed or (not key and windowed_computed):
                        timed.add(segment.name)  # a whole-root read reads the timed ones too
                else:  # profile facts (last_seen, counters, ...) move with every event
                    every.add(segment.name)
            if segment.rule.uses_now:
                timed.add(segment.name)
        self.every_event = frozenset(every)
        self.timed = frozenset(timed)
        # the inputs some segment reads by name (a whole-root read is keyed "")
        self.trait_keys = frozenset(self._by_trait)
        self.computed_keys = frozenset(self._by_computed)
        self._timed_computed = windowed_computed
        # per segment: the segment and the computed traits it reads (looked up per event)
        self.reads: dict[str, tuple[Segment, frozenset[str]]] = {
            name: (segment, frozenset(self.computed_used_by([name])))
            for name, segment in self.segments.items()
        }

    def affected(self, traits: Iterable[str], computed: Iterable[str]) -> set[str]:
        # a rule reading a whole root (len(traits)) is indexed under the empty key
        names = set(self.every_event)
        for index, changed in ((self._by_trait, traits), (self._by_computed, computed)):
            any_change = False
            for key in changed:
                any_change = True
                names |= index.get(key, set())
            if any_change:
                names |= index.get("", set())
        return names

    def computed_used_by(self, names: Iterable[str]) -> set[str]:
        used: set[str] = set()
        for name in names:
            for path in self.segments[name].rule.fields:
                root, _, key = path.partition(".")
                if root == "computed":
                    used.add(key)
        if "" in used:  # a rule reading the whole computed root reads the timed ones too
            used |= self._timed_computed
        return used
