"""Computed traits: every kind and window, sliding expiry with a moving clock, late events,
bounded state, merges, validation, and a property test against a from-scratch evaluation."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from relevo._clock import ManualClock
from relevo.errors import ValidationError
from relevo.events.model import Event
from relevo.profiles import computed
from relevo.profiles.computed import (
    ComputedTraitDef,
    TraitSet,
    merge_computed,
    next_change,
    parse_definition,
    parse_definitions,
    prune,
    update,
    values,
)
from relevo.profiles.computed_defs import (
    KINDS,
    MAX_BUCKETS,
    MIN_BUCKETS,
    VALUES_PER_TRAIT,
    Window,
    bucket_width,
    parse_window,
)
from relevo.profiles.computed_examples import EXAMPLES, example_definitions
from relevo.profiles.computed_kinds import key_value, value_key
from relevo.profiles.model import Profile, decode_profile, encode_profile
from relevo.profiles.state import merge_into

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2026, 3, 2, tzinfo=UTC)  # midnight: on every bucket boundary used below
_ids = itertools.count()


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def ev(
    name: str | None = "Order Completed",
    when: datetime = T0,
    *,
    received: datetime | None = None,
    type: str = "track",
    mid: str | None = None,
    **properties: Any,
) -> Event:
    return Event(
        type=type,  # type: ignore[arg-type]
        message_id=mid or f"m-{next(_ids):08d}",
        source="web",
        received_at=received or when,
        timestamp=when,
        event=name if type == "track" else None,
        name=name if type in ("page", "screen") else None,
        properties=properties,
    )


def trait(**data: Any) -> ComputedTraitDef:
    return parse_definition({"name": "t", **data})


def profile(pid: str = "p") -> Profile:
    return Profile(id=pid, created_at=T0)


def fold(defs: list[ComputedTraitDef], events: list[Event], pid: str = "p") -> Profile:
    p = profile(pid)
    for event in events:
        update(defs, p, event)
    return p


def value_of(d: ComputedTraitDef, events: list[Event], now: datetime) -> Any:
    return values([d], fold([d], events), now)[d.name]


# -- kinds -----------------------------------------------------------------------------------------

ORDERS = [
    ev(when=at(days=1), revenue=30),
    ev(when=at(days=3), revenue=12.5, category="shoes"),
    ev(when=at(days=2), revenue=40, category="hats"),  # late: arrives after day 3
    ev(when=at(days=4), revenue="n/a", category="shoes"),  # not a number
    ev(when=at(days=5), category="socks"),
]
NOW = at(days=10)


@pytest.mark.parametrize(
    ("kind", "prop", "expected"),
    [
        ("count", None, 5),
        ("sum", "revenue", 82.5),
        ("average", "revenue", 27.5),
        ("min", "revenue", 12.5),
        ("max", "revenue", 40),
        ("first", "revenue", 30),
        ("last", "revenue", "n/a"),  # first/last keep any value, by event time
        ("last", "category", "socks"),
        ("distinct_count", "category", 3),
        ("most_frequent", "category", "shoes"),
        ("days_since_last", None, 5),
    ],
)
def test_each_kind(kind: str, prop: str | None, expected: Any) -> None:
    d = trait(kind=kind, event="Order Completed", property=prop)
    assert value_of(d, ORDERS, NOW) == expected


@pytest.mark.parametrize(
    ("kind", "prop", "empty"),
    [
        ("count", None, 0),
        ("sum", "x", 0),
        ("distinct_count", "x", 0),
        *((k, "x", None) for k in ("average", "min", "max", "first", "last", "most_frequent")),
        ("days_since_last", None, None),
    ],
)
def test_a_trait_with_no_events_has_its_empty_value(
    kind: str, prop: str | None, empty: Any
) -> None:
    assert value_of(trait(kind=kind, property=prop), [], NOW) == empty
    assert value_of(trait(kind=kind, property=prop, window="1d"), [], NOW) == empty


def test_every_kind_is_covered_above() -> None:
    assert set(KINDS) == {
        "count",
        "sum",
        "average",
        "min",
        "max",
        "first",
        "last",
        "distinct_count",
        "most_frequent",
        "days_since_last",
    }


def test_most_frequent_breaks_ties_by_the_smallest_value_and_keeps_types() -> None:
    d = trait(kind="most_frequent", property="v")
    assert value_of(d, [ev(v="b"), ev(v="a"), ev(v="b"), ev(v="a")], NOW) == "a"
    assert value_of(d, [ev(v=7), ev(v=7.0), ev(v="7")], NOW) == 7  # 7 and 7.0 are one value
    assert value_of(d, [ev(v=True), ev(v=1), ev(v=True)], NOW) is True


def test_distinct_count_tells_values_apart_by_type_and_content() -> None:
    d = trait(kind="distinct_count", property="v")
    events = [
        ev(v=1),
        ev(v=1.0),
        ev(v="1"),
        ev(v=True),
        ev(v={"a": 1, "b": 2}),
        ev(v={"b": 2, "a": 1}),
    ]
    assert value_of(d, events, NOW) == 4
    for value in ("x", 1, True, [1, "a"], {"k": [1.5]}):
        key = value_key(value)
        assert key is not None
        assert key_value(key) == value
    assert value_key(None) is None
    assert value_key(float("nan")) is None


def test_first_and_last_break_ties_on_time_by_message_id() -> None:
    first = trait(kind="first", property="v")
    last = trait(kind="last", property="v")
    events = [ev(when=T0, mid="m-b", v="b"), ev(when=T0, mid="m-a", v="a")]
    assert value_of(first, events, NOW) == "a"
    assert value_of(last, events, NOW) == "b"
    assert value_of(last, events[::-1], NOW) == "b"


def test_days_since_last_counts_whole_days_and_never_goes_below_zero() -> None:
    d = trait(kind="days_since_last", event="Order Completed")
    p = fold([d], [ev(when=at(hours=6))])
    assert values([d], p, at(hours=6)) == {"t": 0}
    assert values([d], p, at(days=1, hours=5, minutes=59)) == {"t": 0}
    assert values([d], p, at(days=1, hours=6)) == {"t": 1}
    assert values([d], p, at(hours=1)) == {"t": 0}  # the event is ahead of now
    assert next_change([d], p, at(days=3, hours=7)) == at(days=4, hours=6)


# -- windows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "seconds", "width"),
    [
        ("30m", 1800, 60),
        ("90 minutes", 5400, 120),
        ("1h", 3600, 120),
        ("24 hours", 86400, 3600),
        ("7d", 7 * 86400, 21600),
        ("30d", 30 * 86400, 86400),
        ({"days": 90}, 90 * 86400, 3 * 86400),
    ],
)
def test_each_window_unit_slides_at_its_bucket_resolution(
    window: Any, seconds: int, width: int
) -> None:
    d = trait(kind="count", window=window)
    assert d.window is not None
    assert (d.window.seconds, d.window.bucket_seconds) == (seconds, width)
    W, w = timedelta(seconds=seconds), timedelta(seconds=width)
    late_in_bucket = T0 + w - timedelta(microseconds=1)  # last instant of the first bucket
    p = fold([d], [ev(when=T0), ev(when=late_in_bucket)])
    # both count for W - w after the later one happened, and until T0 + W exactly
    assert values([d], p, late_in_bucket + W - w) == {"t": 2}
    assert values([d], p, T0 + W - timedelta(microseconds=1)) == {"t": 2}
    assert values([d], p, T0 + W) == {"t": 0}
    assert next_change([d], p, T0) == T0 + W


def test_bucket_widths_keep_every_window_within_the_bucket_bounds() -> None:
    for unit, limit in (("minutes", 60 * 24 * 3), ("hours", 24 * 30), ("days", 730)):
        for amount in range(1, limit + 1):
            window = Window(amount, unit)  # type: ignore[arg-type]
            assert MIN_BUCKETS <= window.buckets <= MAX_BUCKETS, window
    assert bucket_width(60) == 2


def test_values_expire_as_the_clock_moves() -> None:
    clock = ManualClock(T0)
    d = trait(kind="count", event="Product Viewed", window="7d")
    p = profile()
    for hours in (0, 30, 100):
        update([d], p, ev("Product Viewed", at(hours=hours), received=clock.now()))
    clock.advance(hours=100)
    seen = [values([d], p, clock.now())["t"]]
    while (due := next_change([d], p, clock.now())) is not None:
        assert due > clock.now()
        before = values([d], p, due - timedelta(microseconds=1))["t"]
        assert before == seen[-1]  # nothing changes before the announced time
        clock.advance(seconds=(due - clock.now()).total_seconds())
        seen.append(values([d], p, clock.now())["t"])
    assert seen == [3, 2, 1, 0]
    assert clock.now() == at(hours=96) + timedelta(days=7)  # hour 100 is in the 96-102 bucket


def test_next_change_is_none_for_lifetime_traits_and_empty_windows() -> None:
    lifetime = [trait(kind="count"), trait(name="s", kind="sum", property="x")]
    p = fold(lifetime, [ev(x=1)])
    assert next_change(lifetime, p, NOW) is None
    windowed = trait(kind="count", window="1d")
    assert next_change([windowed], fold([windowed], [ev(when=T0)]), at(days=2)) is None


def test_last_in_a_window_changes_when_its_newest_bucket_expires() -> None:
    d = trait(kind="last", property="v", window="1d")
    p = fold([d], [ev(when=T0, v="a"), ev(when=at(hours=5), v="b")])
    assert next_change([d], p, at(hours=6)) == at(days=1, hours=5)
    assert len(p.computed["t"].buckets) == 1  # only the newest bucket is kept


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        values([trait(kind="count")], profile(), datetime(2026, 1, 1))


# -- late and out-of-order events ------------------------------------------------------------------


def test_late_events_land_in_the_bucket_of_their_event_time() -> None:
    d = trait(kind="count", window="1d")
    arrival = at(hours=23)
    p = fold([d], [ev(when=at(hours=1), received=arrival), ev(when=at(hours=22))])
    assert values([d], p, at(days=1)) == {"t": 2}
    assert values([d], p, at(days=1, hours=1)) == {"t": 1}  # the 01:00 bucket has left


def test_events_older_than_the_window_at_arrival_are_ignored_by_windowed_traits() -> None:
    windowed = trait(kind="count", window="1h")
    lifetime = trait(name="all", kind="count")
    old = ev(when=T0, received=at(hours=2))
    assert update([windowed, lifetime], p := profile(), old) == {"all"}
    assert values([windowed, lifetime], p, at(hours=2)) == {"t": 0, "all": 1}


def test_events_stamped_a_window_ahead_of_arrival_are_ignored_by_windowed_traits() -> None:
    d = trait(kind="count", window="1h")
    assert update([d], profile(), ev(when=at(hours=3), received=T0)) == set()
    assert update([d], profile(), ev(when=at(minutes=50), received=T0)) == {"t"}


def test_first_and_last_follow_event_time_not_arrival() -> None:
    defs = [trait(name="f", kind="first", property="v"), trait(name="l", kind="last", property="v")]
    p = fold(
        defs,
        [
            ev(when=at(days=2), v="middle"),
            ev(when=at(days=3), v="new"),
            ev(when=at(days=1), v="old"),
        ],
    )
    assert values(defs, p, NOW) == {"f": "old", "l": "new"}


# -- filters and the index -------------------------------------------------------------------------


def test_where_matches_equal_values_and_members_of_a_list() -> None:
    d = trait(
        kind="count",
        event="Order Completed",
        where={"currency": ["USD", "EUR"], "customer.tier": "gold"},
    )
    events = [
        ev(currency="USD", customer={"tier": "gold"}),
        ev(currency="EUR", customer={"tier": "gold"}),
        ev(currency="GBP", customer={"tier": "gold"}),
        ev(currency="USD", customer={"tier": "basic"}),
        ev(currency="USD"),
    ]
    assert value_of(d, events, NOW) == 2


def test_where_tells_booleans_from_numbers_and_treats_missing_as_null() -> None:
    flag = trait(kind="count", where={"flag": True})
    one = trait(kind="count", where={"flag": 1})
    null = trait(kind="count", where={"coupon": None})
    events = [ev(flag=True), ev(flag=1), ev(flag=1.0), ev(flag=[1]), ev(coupon="X")]
    assert value_of(flag, events, NOW) == 1
    assert value_of(one, events, NOW) == 2
    assert value_of(null, events, NOW) == 4


def test_type_and_names_filter_events() -> None:
    defs = parse_definitions(
        [
            {"name": "orders", "kind": "count", "event": "Order Completed"},
            {"name": "pages", "kind": "count", "type": "page"},
            {"name": "home", "kind": "count", "type": "page", "events": ["Home"]},
            {"name": "tracks", "kind": "count", "type": "track"},
            {"name": "all", "kind": "count"},
        ]
    )
    assert defs[0].event_type == "track"
    p = profile()
    assert update(defs, p, ev("Order Completed")) == {"orders", "tracks", "all"}
    assert update(defs, p, ev("Home", type="page")) == {"pages", "home", "all"}
    assert update(defs, p, ev("Order Completed", type="page")) == {"pages", "all"}
    assert update(defs, p, ev("Other")) == {"tracks", "all"}
    assert update(defs, p, ev(None, type="identify")) == {"all"}
    for d in defs:
        for e in (ev("Order Completed"), ev("Home", type="page"), ev(None, type="identify")):
            assert (d.name in update([d], profile(), e)) == d.matches(e)


def test_a_rule_based_where_can_replace_the_equality_filter() -> None:
    def compile_where(where: Any) -> Any:
        assert where == "revenue > 100"
        return lambda event: event.properties.get("revenue", 0) > 100

    d = parse_definition(
        {"name": "big", "kind": "count", "where": "revenue > 100"}, compile_where=compile_where
    )
    assert value_of(d, [ev(revenue=50), ev(revenue=150), ev(revenue=500)], NOW) == 2


def test_a_list_changed_in_place_gets_a_new_index() -> None:
    defs = [trait(name="a", kind="count", event="A")]
    assert update(defs, profile(), ev("B")) == set()
    defs[0] = trait(name="b", kind="count", event="B")
    assert update(defs, profile(), ev("B")) == {"b"}
    defs.append(trait(name="c", kind="count", event="B"))
    assert update(defs, profile(), ev("B")) == {"b", "c"}
    assert update(TraitSet(defs), profile(), ev("B")) == {"b", "c"}


def test_update_reports_only_traits_whose_state_changed() -> None:
    defs = [
        trait(name="mx", kind="max", property="x"),
        trait(name="d", kind="distinct_count", property="x"),
    ]
    p = profile()
    assert update(defs, p, ev(x=5)) == {"mx", "d"}
    assert update(defs, p, ev(x=3)) == {"d"}
    assert update(defs, p, ev(x=5)) == set()
    assert update(defs, p, ev(y=9)) == set()


# -- state: bounds, serialisation, pruning, definition changes -------------------------------------


def test_windowed_state_holds_only_the_window_worth_of_buckets() -> None:
    d = trait(kind="sum", property="x", window="2h")
    assert d.window is not None
    p = profile()
    for minute in range(0, 3 * 24 * 60, 7):
        update([d], p, ev(when=at(minutes=minute), x=1))
        assert len(p.computed["t"].buckets) <= d.window.buckets + 1
    end = 3 * 24 * 60
    expected = sum(1 for m in range(0, end, 7) if (m // 5) * 5 + 120 > end)  # 5-minute buckets
    assert values([d], p, at(days=3)) == {"t": expected}


def test_distinct_values_are_capped_per_bucket() -> None:
    lifetime = trait(name="life", kind="distinct_count", property="v")
    windowed = trait(name="win", kind="most_frequent", property="v", window="30d")
    defs = [lifetime, windowed]
    p = profile()
    for i in range(VALUES_PER_TRAIT + 500):
        update(defs, p, ev(when=at(seconds=i), v=f"v{i:05d}"))
    update(defs, p, ev(when=at(seconds=1), v="v00000"))  # a known value still counts
    assert len(p.computed["life"].buckets[0].values or ()) == VALUES_PER_TRAIT
    assert values(defs, p, at(days=1)) == {"life": VALUES_PER_TRAIT, "win": "v00000"}
    (bucket,) = p.computed["win"].buckets.values()
    assert len(bucket.values or ()) == windowed.values_cap == VALUES_PER_TRAIT // 30


def test_state_round_trips_through_the_profile_encoding() -> None:
    defs = example_definitions() + [trait(kind="distinct_count", property="v", window="1h")]
    p = fold(
        defs, [*ORDERS, ev("Product Viewed", category="a", product_id="x"), ev(v=1.5), ev(v="1.5")]
    )
    back = decode_profile(encode_profile(p))
    assert back == p
    assert values(defs, back, at(days=5)) == values(defs, p, at(days=5))
    assert update(defs, back, ev(revenue=1)) == update(defs, p, ev(revenue=1))


def test_prune_drops_expired_buckets_stale_state_and_unknown_traits() -> None:
    d = trait(kind="count", window="1d")
    gone = trait(name="gone", kind="count")
    p = fold([d, gone], [ev(when=T0), ev(when=at(hours=12))])
    assert prune([d], p, at(hours=1)) is True  # "gone" is no longer defined
    assert set(p.computed) == {"t"}
    assert prune([d], p, at(days=1, hours=1)) is True
    assert len(p.computed["t"].buckets) == 1
    assert prune([d], p, at(days=1, hours=1)) is False
    assert prune([d], p, at(days=2)) is True
    assert p.computed == {}
    p = fold([d], [ev(when=T0)])
    assert prune([trait(kind="count", window="2d")], p, T0) is True  # the window changed
    assert p.computed == {}


def test_a_changed_definition_starts_its_state_over() -> None:
    old = trait(kind="count", event="A")
    new = trait(kind="count", event="B")
    p = fold([old], [ev("A"), ev("A")])
    assert values([new], p, NOW) == {"t": 0}
    update([new], p, ev("B"))
    assert values([new], p, NOW) == {"t": 1}
    assert values([old], p, NOW) == {"t": 0}


# -- merge -----------------------------------------------------------------------------------------


def test_merge_combines_state_bucket_by_bucket() -> None:
    defs = [
        trait(name=kind, kind=kind, property=None if kind in ("count", "days_since_last") else "v")
        for kind in KINDS
    ]
    a_events = [ev(when=at(days=1), v=5), ev(when=at(days=4), v="x")]
    b_events = [ev(when=at(days=2), v=1), ev(when=at(days=3), v=5), ev(when=at(days=5), v=2.5)]
    a, b = fold(defs, a_events, "a"), fold(defs, b_events, "b")
    merge_into(a, b)
    assert values(defs, a, NOW) == values(defs, fold(defs, a_events + b_events), NOW)
    assert values(defs, a, NOW) == {
        "count": 5,
        "sum": 13.5,
        "average": 3.375,
        "min": 1,
        "max": 5,
        "first": 5,
        "last": 2.5,
        "distinct_count": 4,
        "most_frequent": 5,
        "days_since_last": 5,
    }
    assert values(defs, b, NOW)["count"] == 3  # the merged profile is left as it was


def test_merge_keeps_caps_and_is_symmetric() -> None:
    d = trait(kind="distinct_count", property="v")
    a = fold([d], [ev(v=f"a{i:04d}") for i in range(VALUES_PER_TRAIT)], "a")
    b = fold([d], [ev(v=f"b{i:04d}") for i in range(10)], "b")
    ab, ba = decode_profile(encode_profile(a)), decode_profile(encode_profile(b))
    merge_computed(ab, b)
    merge_computed(ba, a)
    assert ab.computed == ba.computed
    assert values([d], ab, NOW) == {"t": VALUES_PER_TRAIT}


def test_merge_keeps_the_survivor_state_when_definitions_differ() -> None:
    a = fold([trait(kind="count", event="A")], [ev("A")], "a")
    b = fold([trait(kind="count", event="B")], [ev("B"), ev("B")], "b")
    merge_computed(a, b)
    assert values([trait(kind="count", event="A")], a, NOW) == {"t": 1}


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "location", "message"),
    [
        ({"kind": "count"}, "name", "required"),
        ({"name": "bad name", "kind": "count"}, "name", "is not a name"),
        ({"name": "t", "kind": "median"}, "kind", "is not a kind"),
        ({"name": "t", "kind": ["count"]}, "kind", "is not a kind"),
        ({"name": "t\n", "kind": "count"}, "name", "is not a name"),
        ({"name": "t", "kind": "count", "type": ["track"]}, "type", "not an event type"),
        ({"name": "t", "kind": "count", "description": 1}, "description", "expected a string"),
        ({"name": "t", "kind": "sum"}, "property", "needs the property"),
        ({"name": "t", "kind": "count", "property": "x"}, "property", "takes no property"),
        ({"name": "t", "kind": "max", "property": "a..b"}, "property", "not a property path"),
        ({"name": "t", "kind": "count", "window": "30 fortnights"}, "window", "not a window"),
        ({"name": "t", "kind": "count", "window": "0d"}, "window", "between 1 minute"),
        ({"name": "t", "kind": "count", "window": "1000d"}, "window", "between 1 minute"),
        ({"name": "t", "kind": "count", "window": {"weeks": 2}}, "window", "not a window unit"),
        ({"name": "t", "kind": "count", "window": 30}, "window", "not a window"),
        ({"name": "t", "kind": "count", "type": "click"}, "type", "not an event type"),
        ({"name": "t", "kind": "count", "type": "identify", "event": "X"}, "events", "no name"),
        ({"name": "t", "kind": "count", "event": "A", "events": ["B"]}, "event", "not both"),
        ({"name": "t", "kind": "count", "events": "A"}, "events", "list of event names"),
        ({"name": "t", "kind": "count", "where": {"x": {"gt": 1}}}, "where.x", "values must be"),
        ({"name": "t", "kind": "count", "where": {"x": []}}, "where.x", "matches nothing"),
        ({"name": "t", "kind": "count", "where": ["x"]}, "where", "non-empty mapping"),
        ({"name": "t", "kind": "count", "filter": {}}, "filter", "unknown field"),
    ],
)
def test_invalid_definitions_say_what_is_wrong(data: Any, location: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_definitions([data])
    error = raised.value
    assert message in error.message
    assert f"computed_traits[0].{location}" in [d.location for d in error.details]


def test_validation_reports_every_problem_of_every_definition() -> None:
    with pytest.raises(ValidationError) as raised:
        parse_definitions(
            [
                {"name": "a", "kind": "count"},
                {"name": "a", "kind": "count"},
                {"name": "b", "kind": "sum", "window": "1y"},
                "not a mapping",
            ]
        )
    locations = [d.location for d in raised.value.details]
    assert locations == [
        "computed_traits[1].name",
        "computed_traits[2].window",
        "computed_traits[2].property",
        "computed_traits[3]",
    ]
    assert "'a' is defined twice" in raised.value.message
    with pytest.raises(ValidationError, match="expected a list"):
        parse_definitions({"name": "a"})
    assert parse_definitions(None) == []


def test_definitions_built_in_code_are_validated_too() -> None:
    with pytest.raises(ValidationError, match="needs the property"):
        ComputedTraitDef(name="x", kind="sum")
    assert parse_window("lifetime") is None
    assert parse_window("12 Hours") == Window(12, "hours")


# -- examples and docs -----------------------------------------------------------------------------


def test_the_examples_parse_and_compute() -> None:
    defs = example_definitions()
    assert [d.name for d in defs] == [
        "orders_30d",
        "revenue_lifetime",
        "favorite_category_90d",
        "last_viewed_product",
        "days_since_last_order",
    ]
    events = [
        ev("Order Completed", at(days=1), revenue=20),
        ev("Product Viewed", at(days=2), category="shoes", product_id="p1"),
        ev("Product Viewed", at(days=3), category="hats", product_id="p2"),
        ev("Product Viewed", at(days=4), category="shoes", product_id="p3"),
        ev("Order Completed", at(days=40), revenue=15.5),
    ]
    assert values(defs, fold(defs, events), at(days=45)) == {
        "orders_30d": 1,
        "revenue_lifetime": 35.5,
        "favorite_category_90d": "shoes",
        "last_viewed_product": "p3",
        "days_since_last_order": 5,
    }


def test_the_docs_show_the_shipped_examples() -> None:
    text = (ROOT / "docs" / "computed-traits.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    shipped = [yaml.safe_load(b) for b in blocks if "computed_traits:" in b]
    assert {"computed_traits": EXAMPLES} in shipped
    for block in blocks:  # every YAML example in the docs is a valid definition list
        data = yaml.safe_load(block)
        parse_definitions(data["computed_traits"] if isinstance(data, dict) else data)


# -- the property: incremental == from scratch -----------------------------------------------------

NAMES = ["A", "B"]
NUMERIC = {"sum", "average", "min", "max"}


def reference(d: ComputedTraitDef, events: list[Event], now: datetime) -> Any:
    """Filter the events plainly, keep those in the window by event time (with the same
    bucket-aligned edge and arrival rules), aggregate them from scratch."""
    rows: list[tuple[datetime, str, Any]] = []
    for e in events:
        if d.event_type is not None and e.type != d.event_type:
            continue
        if d.events and (e.event if e.type == "track" else e.name) not in d.events:
            continue
        if d.where is not None and not all(
            _plain_equal(_get(e.properties, path), wanted) for path, wanted in d.where.items()
        ):
            continue
        value = _get(e.properties, d.property) if d.property else None
        if d.property and value is None:
            continue
        if d.kind in NUMERIC and type(value) not in (int, float):
            continue
        if d.kind in ("distinct_count", "most_frequent") and value_key(value) is None:
            continue
        if d.window is not None:
            width = timedelta(seconds=d.window.bucket_seconds)
            start = EPOCH + ((e.timestamp - EPOCH) // width) * width
            span = timedelta(seconds=d.window.seconds)
            if start + span <= e.received_at or start >= e.received_at + span:
                continue
            if start + span <= now:
                continue
        rows.append((e.timestamp, e.message_id, value))
    found = [v for _, _, v in rows]
    match d.kind:
        case "count":
            return len(rows)
        case "sum":
            return sum(found)
        case "average":
            return sum(found) / len(found) if found else None
        case "min":
            return min(found, default=None)
        case "max":
            return max(found, default=None)
        case "first":
            return min(rows)[2] if rows else None
        case "last":
            return max(rows)[2] if rows else None
        case "distinct_count":
            return len({value_key(v) for v in found})
        case "most_frequent":
            counts = Counter(value_key(v) for v in found)
            if not counts:
                return None
            best = max(counts.values())
            return key_value(min(k for k, c in counts.items() if c == best))
        case "days_since_last":
            if not rows:
                return None
            return max(0, (now - max(rows)[0]) // timedelta(days=1))
    raise AssertionError(d.kind)


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def _plain_equal(value: Any, wanted: Any) -> bool:
    options = wanted if isinstance(wanted, list) else [wanted]
    return any(
        isinstance(value, bool) == isinstance(option, bool)
        and value == option
        and not isinstance(value, dict | list)
        for option in options
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(got: Any, want: Any) -> bool:
    if _is_number(got) and _is_number(want):  # 1 and 1.0 may tie for min or max
        return bool(got == pytest.approx(want, rel=1e-9, abs=1e-9))
    return bool(got == want and type(got) is type(want))


SCALARS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.25, 2.0, 1e3]),
    st.sampled_from(["x", "y", "3"]),
    st.booleans(),
    st.none(),
)
WINDOWS = st.sampled_from([None, "5m", "90m", "2h", "1d", "3d", "7d"])


@st.composite
def definitions(draw: st.DrawFn, name: str) -> ComputedTraitDef:
    kind = draw(st.sampled_from(KINDS))
    data: dict[str, Any] = {"name": name, "kind": kind, "window": draw(WINDOWS)}
    if draw(st.booleans()):
        data["events"] = draw(st.lists(st.sampled_from(NAMES), min_size=1, unique=True))
        data["type"] = draw(st.sampled_from(["track", "page"]))
    elif draw(st.booleans()):
        data["type"] = draw(st.sampled_from(["track", "page", "identify"]))
    if draw(st.integers(0, 3)) == 0:
        data["where"] = {"tier": draw(st.sampled_from(["gold", ["gold", 1], True]))}
    if kind not in ("count", "days_since_last"):
        data["property"] = draw(st.sampled_from(["v", "nested.v"]))
    return parse_definition(data)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], datetime]:
    """Events in arrival order (not time order), some late, some with equal times."""
    count = draw(st.integers(0, 25))
    span = 10 * 86400 * 10**6
    events = []
    latest = T0
    for i in range(count):
        coarse = draw(st.booleans())  # on a 1-day grid: equal times, bucket edges
        offset = draw(st.integers(0, 10)) * 86400 * 10**6 if coarse else draw(st.integers(0, span))
        when = T0 + timedelta(microseconds=offset)
        received = when + timedelta(seconds=draw(st.integers(-3600, 3 * 86400)))
        latest = max(latest, received)
        props: dict[str, Any] = {}
        if draw(st.integers(0, 3)):  # mostly present, sometimes missing
            props["v"] = draw(SCALARS)
        if draw(st.integers(0, 3)):
            props["nested"] = {"v": draw(SCALARS)}
        if draw(st.booleans()):
            props["tier"] = draw(st.sampled_from(["gold", "silver", 1, True]))
        events.append(
            ev(
                draw(st.sampled_from([*NAMES, "C"])),
                when,
                received=received,
                type=draw(st.sampled_from(["track", "track", "page", "identify"])),
                mid=f"m-{draw(st.integers(0, 5))}-{i}",
                **props,
            )
        )
    now = latest + timedelta(microseconds=draw(st.integers(0, 8 * 86400 * 10**6)))
    return events, now


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    defs=st.integers(1, 3).flatmap(lambda n: st.tuples(*(definitions(f"t{i}") for i in range(n)))),
    history=histories(),
    split=st.integers(0, 25),
)
def test_incremental_values_equal_a_from_scratch_evaluation(
    defs: tuple[ComputedTraitDef, ...], history: tuple[list[Event], datetime], split: int
) -> None:
    events, now = history
    p = fold(defs, events)
    got = values(defs, p, now)
    for d in defs:
        want = reference(d, events, now)
        assert _same(got[d.name], want), (d, got[d.name], want)

    # the same history in two profiles, merged, gives the same values
    a, b = fold(defs, events[:split], "a"), fold(defs, events[split:], "b")
    merge_computed(a, b)
    merged = values(defs, decode_profile(encode_profile(a)), now)
    assert all(_same(merged[d.name], got[d.name]) for d in defs), (merged, got)

    # nothing changes before next_change; pruning at now changes no value
    due = next_change(defs, p, now)
    if due is not None:
        assert due > now
        later = values(defs, p, due - timedelta(microseconds=1))
        assert all(_same(later[n], got[n]) for n in got), (due, later, got)
    prune(defs, p, now)
    assert all(_same(values(defs, p, now)[n], got[n]) for n in got)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    defs=st.integers(1, 3).flatmap(lambda n: st.tuples(*(definitions(f"t{i}") for i in range(n)))),
    history=histories(),
)
def test_only_an_opened_bucket_or_a_day_count_brings_the_next_change_forward(
    defs: tuple[ComputedTraitDef, ...], history: tuple[list[Event], datetime]
) -> None:
    """What lets the processor keep a profile's due time between events: after an event, the
    next change is no earlier than the one before it, or than that of the traits the event
    opened a bucket in (or, for a days_since_last, changed at all)."""
    events, now = history
    p = profile()
    for event in events:
        before = next_change(defs, p, now)
        opened: set[str] = set()
        changed = update(defs, p, event, opened)
        assert opened <= changed
        moved = [
            d
            for d in defs
            if d.name in opened or (d.kind == "days_since_last" and d.name in changed)
        ]
        kept = [t for t in (before, next_change(moved, p, now)) if t is not None]
        after = next_change(defs, p, now)
        if after is not None:
            assert kept and min(kept) <= after, (event, before, after, kept)


def test_a_later_event_in_a_day_count_bucket_brings_its_next_day_forward() -> None:
    """Why a days_since_last counts as moved whenever it changes: its one bucket takes a later
    event without opening a bucket, and the next whole day comes sooner."""
    d = trait(kind="days_since_last", event="Order Completed")
    p = fold([d], [ev(when=T0)])
    now = at(days=2, hours=12)
    assert next_change([d], p, now) == at(days=3)
    opened: set[str] = set()
    assert update([d], p, ev(when=at(days=1, hours=14), received=now), opened) == {"t"}
    assert opened == set()
    assert next_change([d], p, now) == at(days=2, hours=14)


def test_the_module_exports_its_api() -> None:
    assert set(computed.__all__) >= {"update", "values", "next_change", "prune", "merge_computed"}


def test_where_may_be_a_rule_over_the_event() -> None:
    from datetime import UTC, datetime

    from relevo.events.model import Event
    from relevo.profiles.computed import parse_definitions

    (text_form,) = parse_definitions(
        [
            {
                "name": "trail_views",
                "kind": "count",
                "event": "Product Viewed",
                "where": 'event.properties.category in ["running", "trail"] and '
                "event.properties.price >= 100",
            }
        ]
    )
    (json_form,) = parse_definitions(
        [
            {
                "name": "trail_views",
                "kind": "count",
                "event": "Product Viewed",
                "where": {"in": [{"var": "event.properties.category"}, ["running", "trail"]]},
            }
        ]
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def viewed(**properties: object) -> Event:
        return Event(
            type="track",
            event="Product Viewed",
            message_id="m",
            source="s",
            received_at=at,
            timestamp=at,
            anonymous_id="a",
            properties=properties,
        )

    assert text_form.where_filter is not None and json_form.where_filter is not None
    assert text_form.where_filter(viewed(category="trail", price=120))
    assert not text_form.where_filter(viewed(category="trail", price=20))
    assert not text_form.where_filter(viewed(category="shoes", price=120))
    assert json_form.where_filter(viewed(category="running"))
    assert not json_form.where_filter(viewed(category="sandals"))
