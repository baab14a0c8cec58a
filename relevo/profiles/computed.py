"""Computed traits, maintained incrementally as events arrive. Pure functions over ``Profile``.

A trait's state (``profile.computed[name]``, a ``TraitState``) is a map of time buckets to
partial aggregates (``Bucket``). An event lands in the bucket of its EVENT time, so late and
out-of-order events count where they belong; reading a value at ``now`` aggregates the buckets
still inside the window, so a window slides without rescanning history.

Window semantics, with ``W`` the window and ``w`` its bucket width (``Window.bucket_seconds``):

- bucket ``k`` holds events with ``k*w <= time < (k+1)*w`` (epoch seconds, UTC);
- at ``now`` it counts while ``k*w + W > now``: an event always counts for ``W - w`` after it
  happened and never for more than ``W`` (the resolution of the older edge is ``w``);
- an event is ignored by a windowed trait when its bucket had already left the window when it
  arrived (``event.received_at``), or starts a whole window after the arrival (a clock far
  ahead): so state never holds buckets that are dead, or that are far in the future;
- whenever a trait opens a new bucket it drops the buckets that had expired at that event's
  arrival (``prune`` does the same at any ``now``), so a trait holds the ``Window.buckets``
  (+1) buckets of its window, plus any of events stamped ahead of their arrival: never more
  than ``2 * Window.buckets + 2``. ``last`` and ``days_since_last`` keep only the newest.

Lifetime traits keep one bucket (key 0). Definitions are indexed by event type and name, so an
event only touches the traits whose filter can match it; ``TraitSet`` holds that index, and a
plain list of definitions gets one built once and remembered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from relevo.events.model import EVENT_TYPES, Event
from relevo.profiles.computed_defs import (
    ComputedTraitDef,
    EventFilter,
    Window,
    lookup,
    parse_definition,
    parse_definitions,
)
from relevo.profiles.computed_kinds import KIND_OPS, days_between, value_key
from relevo.profiles.computed_state import Bucket, TraitState
from relevo.profiles.model import Profile

__all__ = [
    "ComputedTraitDef",
    "TraitSet",
    "Window",
    "merge_computed",
    "next_change",
    "parse_definition",
    "parse_definitions",
    "prune",
    "update",
    "values",
]

_DAY = 86400


class _Plan:
    """One definition, flattened for the per-event loops."""

    __slots__ = (
        "cap",
        "days",
        "empty",
        "fold",
        "key0",
        "kind",
        "name",
        "new",
        "newest_only",
        "path",
        "prepare",
        "sig",
        "value",
        "where",
        "width",
        "window",
    )

    def __init__(self, d: ComputedTraitDef) -> None:
        ops = KIND_OPS[d.kind]
        self.name = d.name
        self.kind = d.kind
        self.sig = d.sig
        self.cap = d.values_cap if ops.prepare is value_key else 0
        self.where: EventFilter | None = d.where_filter
        self.path: tuple[str, ...] | None = d.path or None
        self.key0: str | None = d.path[0] if len(d.path) == 1 else None
        self.prepare = ops.prepare
        self.new = ops.new
        self.fold = ops.fold
        self.width = d.bucket_seconds
        self.window = d.window.seconds if d.window is not None else 0
        self.newest_only = ops.newest_only
        self.value = ops.value
        self.empty = ops.empty
        self.days = d.kind == "days_since_last"


class TraitSet(Sequence[ComputedTraitDef]):
    """Definitions (immutable), flattened into plans (``values`` and ``next_change`` read
    them), with the index ``update`` uses: event type -> event name -> the plans that can
    match."""

    def __init__(self, definitions: Iterable[ComputedTraitDef]) -> None:
        self._defs = tuple(definitions)
        self.plans = plans = tuple(_Plan(d) for d in self._defs)
        self._subsets: dict[frozenset[str], TraitSet] = {}
        # plans that match any name of a type; and per type and name, those plus the named ones
        self._any: dict[str, tuple[_Plan, ...]] = {
            t: tuple(
                p
                for d, p in zip(self._defs, plans, strict=True)
                if not d.events and d.event_type in (None, t)
            )
            for t in EVENT_TYPES
        }
        named: dict[str, dict[str, list[_Plan]]] = {}
        for d, p in zip(self._defs, plans, strict=True):
            for name in d.events:
                assert d.event_type is not None  # names imply a type (track by default)
                named.setdefault(d.event_type, {}).setdefault(name, []).append(p)
        self._named: dict[str, dict[str, tuple[_Plan, ...]]] = {
            t: {name: (*self._any[t], *found) for name, found in by_name.items()}
            for t, by_name in named.items()
        }

    def subset(self, names: frozenset[str]) -> TraitSet:
        """The definitions named in ``names``, as a ``TraitSet`` (remembered)."""
        found = self._subsets.get(names)
        if found is None:
            if len(self._subsets) >= _SUBSETS_MAX:
                self._subsets.clear()
            found = self._subsets[names] = TraitSet(d for d in self._defs if d.name in names)
        return found

    def plans_for(self, event: Event) -> tuple[_Plan, ...]:
        etype = event.type
        named = self._named.get(etype)
        if named is not None:
            name = event.event if etype == "track" else event.name
            if name is not None:
                plans = named.get(name)
                if plans is not None:
                    return plans
        return self._any.get(etype, ())

    @overload
    def __getitem__(self, index: int) -> ComputedTraitDef: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ComputedTraitDef]: ...
    def __getitem__(self, index: int | slice) -> ComputedTraitDef | Sequence[ComputedTraitDef]:
        return self._defs[index]

    def __len__(self) -> int:
        return len(self._defs)

    def __iter__(self) -> Iterator[ComputedTraitDef]:
        return iter(self._defs)

    def __repr__(self) -> str:
        return f"TraitSet({[d.name for d in self._defs]})"


# Index of a plain sequence of definitions, remembered by identity (and checked element by
# element, so a list changed in place gets a new index). Bounded; only a memo.
_SETS: dict[int, tuple[Sequence[ComputedTraitDef], tuple[ComputedTraitDef, ...], TraitSet]] = {}
_SETS_MAX = 32
_SUBSETS_MAX = 256  # per TraitSet: the combinations of traits one event moves are few


def trait_set(defs: Sequence[ComputedTraitDef]) -> TraitSet:
    """The ``TraitSet`` of ``defs`` (itself if it is one)."""
    if isinstance(defs, TraitSet):
        return defs
    known = _SETS.get(id(defs))
    if (
        known is not None
        and known[0] is defs
        and known[1] == tuple(defs)  # element-wise, identity first: a list changed in place
    ):
        return known[2]
    built = TraitSet(defs)
    if len(_SETS) >= _SETS_MAX:
        del _SETS[next(iter(_SETS))]
    _SETS[id(defs)] = (defs, tuple(defs), built)
    return built


def update(
    defs: Sequence[ComputedTraitDef],
    profile: Profile,
    event: Event,
    opened: set[str] | None = None,
) -> set[str]:
    """Fold one event into the computed traits it matches.

    Args:
        defs: the definitions; a ``TraitSet``, or a sequence that is not changed in place.
        profile: its ``computed`` state is updated in place.
        event: bucketed by ``event.timestamp``; ``event.received_at`` is its arrival time.
        opened: if given, the names of the traits that opened a bucket are added to it (only
            a new bucket can bring a window's ``next_change`` forward).

    Returns:
        The names of the traits whose state changed.
    """
    plans = trait_set(defs).plans_for(event)
    changed: set[str] = set()
    if not plans:
        return changed
    properties = event.properties
    t = event.timestamp.timestamp()
    mid = event.message_id
    arrival: float | None = None
    computed = profile.computed
    add = changed.add
    for p in plans:
        where = p.where
        if where is not None and not where(event):
            continue
        value: Any = None
        if p.path is not None:
            value = properties.get(p.key0) if p.key0 is not None else lookup(properties, p.path)
            if value is None:
                continue
            if p.prepare is not None:
                value = p.prepare(value)
                if value is None:
                    continue
        width = p.width
        if width:
            key = int(t // width)
            start = key * width
            if arrival is None:
                arrival = event.received_at.timestamp()
            window = p.window
            if start + window <= arrival or start >= arrival + window:
                continue
        else:
            key = 0
        state = computed.get(p.name)
        if state is None or state.sig != p.sig:
            state = computed[p.name] = TraitState(p.kind, p.sig, {}, p.cap)
        buckets = state.buckets
        bucket = buckets.get(key)
        if bucket is not None:
            if p.fold(bucket, value, t, mid, p.cap):
                add(p.name)
            continue
        if width and buckets and not _make_room(p, buckets, key, arrival):
            continue
        buckets[key] = p.new(value, t, mid)
        add(p.name)
        if opened is not None:
            opened.add(p.name)
    return changed


def _make_room(p: _Plan, buckets: dict[int, Bucket], key: int, arrival: float | None) -> bool:
    """Before a windowed trait opens bucket ``key``: drop what expired at the arrival, or,
    for a newest-only kind, everything (unless ``key`` is older, when it is not opened)."""
    if p.newest_only:
        if key < max(buckets):
            return False
        buckets.clear()
        return True
    assert arrival is not None
    first = _first_live(arrival, p.window, p.width)
    if min(buckets) < first:
        _drop_before(buckets, first)
    return True


def values(defs: Sequence[ComputedTraitDef], profile: Profile, now: datetime) -> dict[str, Any]:
    """The value of every trait at ``now``: 0 for count, sum and distinct_count over no events,
    ``None`` for the other kinds; ``days_since_last`` in whole days.

    Raises:
        ValueError: ``now`` is naive.
    """
    now_s = _seconds(now)
    found: dict[str, Any] = {}
    computed = profile.computed
    for p in trait_set(defs).plans:
        state = computed.get(p.name)
        if state is None or state.sig != p.sig or not state.buckets:
            found[p.name] = p.empty
            continue
        buckets = state.buckets
        if len(buckets) == 1:  # a lifetime trait, or a window's events all in one bucket
            ((key, bucket),) = buckets.items()
            live = [bucket] if not p.width or key >= _first_live(now_s, p.window, p.width) else []
        else:  # oldest first: a sum of floats depends on the order
            live = [buckets[k] for k in sorted(_live_keys(p, buckets, now_s))]
        found[p.name] = p.value(live, now_s) if live else p.empty
    return found


def next_change(
    defs: Sequence[ComputedTraitDef], profile: Profile, now: datetime
) -> datetime | None:
    """The earliest time after ``now`` at which a value may change with no new event: a bucket
    leaving its window, or the next whole day of a ``days_since_last``. It may be early (a
    bucket expires without moving a max), never late. ``None`` if nothing changes with time.

    Raises:
        ValueError: ``now`` is naive.
    """
    now_s = _seconds(now)
    due: float | None = None
    computed = profile.computed
    for p in trait_set(defs).plans:
        state = computed.get(p.name)
        if state is None or state.sig != p.sig or not state.buckets:
            continue
        buckets = state.buckets
        live = _live_keys(p, buckets, now_s)
        if not live:
            continue
        if p.width:
            # last and days_since_last read the newest bucket only; the others the oldest too
            key = max(live) if p.newest_only else min(live)
            expiry = key * p.width + p.window
            due = expiry if due is None else min(due, expiry)
        if p.days:
            at = max(buckets[k].at for k in live)
            next_day = at + (days_between(now_s, at) + 1) * _DAY
            due = next_day if due is None else min(due, next_day)
    return None if due is None else datetime.fromtimestamp(due, UTC)


def prune(defs: Sequence[ComputedTraitDef], profile: Profile, now: datetime) -> bool:
    """Drop expired buckets, and the state of traits that are not in ``defs`` (pass the whole
    set) or were built under another version of their definition.

    Returns:
        Whether anything was dropped.

    Raises:
        ValueError: ``now`` is naive.
    """
    now_s = _seconds(now)
    by_name = {d.name: d for d in defs}
    computed = profile.computed
    dropped = False
    for name, state in list(computed.items()):
        d = by_name.get(name)
        if d is None or state.sig != d.sig:
            del computed[name]
            dropped = True
        elif d.window is not None:
            width = d.window.bucket_seconds
            before = len(state.buckets)
            _drop_before(state.buckets, _first_live(now_s, d.window.seconds, width))
            if len(state.buckets) != before:
                dropped = True
            if not state.buckets:
                del computed[name]
    return dropped


def merge_computed(into: Profile, other: Profile) -> None:
    """Fold the computed state of ``other`` into ``into``, bucket by bucket: counts and sums
    add, min/max combine, first/last by event time, distinct sets unite, frequencies add (over
    a bucket's cap, the smallest keys / highest counts are kept, whichever side is which).

    A trait whose two states were built under different definitions keeps ``into``'s; the
    next update or ``prune`` resets whichever is stale. ``other`` is left untouched.
    """
    mine = into.computed
    for name, theirs in other.computed.items():
        state = mine.get(name)
        if state is None:
            mine[name] = TraitState(
                theirs.kind,
                theirs.sig,
                {k: _copy(b) for k, b in theirs.buckets.items()},
                theirs.cap,
            )
            continue
        ops = KIND_OPS.get(state.kind)
        if ops is None or state.sig != theirs.sig or state.kind != theirs.kind:
            continue
        buckets = state.buckets
        for key, bucket in theirs.buckets.items():
            current = buckets.get(key)
            if current is None:
                buckets[key] = _copy(bucket)
            else:
                ops.merge(current, bucket, state.cap)
        if ops.newest_only and len(buckets) > 1:
            _drop_before(buckets, max(buckets))


def _copy(bucket: Bucket) -> Bucket:
    held = bucket.values
    return Bucket(
        bucket.n,
        bucket.total,
        bucket.value,
        bucket.at,
        bucket.mid,
        dict(held) if held is not None else None,
    )


def _live_keys(p: _Plan, buckets: dict[int, Bucket], now_s: float) -> list[int]:
    """The keys of the buckets that count at ``now_s``, in no particular order."""
    if not p.width:
        return list(buckets)  # the one lifetime bucket
    first = _first_live(now_s, p.window, p.width)
    return [k for k in buckets if k >= first]


def _first_live(now_s: float, window: int, width: int) -> int:
    # bucket k counts while k*width + window > now, i.e. k > (now - window) / width
    return int((now_s - window) // width) + 1


def _drop_before(buckets: dict[int, Bucket], first: int) -> None:
    for key in [k for k in buckets if k < first]:
        del buckets[key]


def _seconds(now: datetime) -> float:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.timestamp()
