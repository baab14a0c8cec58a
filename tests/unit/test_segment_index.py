"""Segments without I/O: definitions, the index from inputs to segments, and the qualifier
(which segments an event, a timer, a backfill or a merge evaluates, and what it produces)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from relevo.errors import ValidationError
from relevo.events.model import Event
from relevo.pipeline.qualify import Definitions, Qualification, Qualifier, outbox_row
from relevo.profiles import computed
from relevo.profiles.computed import parse_definitions
from relevo.profiles.model import Profile
from relevo.profiles.state import apply_event
from relevo.rules import RuleError
from relevo.segments.changes import MembershipChange
from relevo.segments.engine import DataShape, rule_data
from relevo.segments.index import SegmentIndex
from relevo.segments.model import (
    Segment,
    SegmentDefinition,
    compile_segment,
    parse_definition,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_ids = itertools.count()

TRAITS = parse_definitions(
    [
        {"name": "views_7d", "kind": "count", "event": "Product Viewed", "window": "7d"},
        {"name": "orders", "kind": "count", "event": "Order Completed"},
        {"name": "days_since_order", "kind": "days_since_last", "event": "Order Completed"},
        {"name": "spend", "kind": "sum", "event": "Order Completed", "property": "revenue"},
    ]
)
RULES = {
    "pro": 'traits.plan == "pro"',
    "pro-buyer": 'traits.plan == "pro" and computed.orders >= 1',
    "browser": "computed.views_7d >= 2",
    "lapsing": "computed.days_since_order >= 14",
    "recent": "profile.last_seen >= now() - days(1)",
    "clicker": 'event_count("Clicked") >= 2',
    "described": "len(traits) >= 2",
    "any-computed": "len(computed) >= 99",
    "no-plan": "traits.plan is null",
}


def segment(name: str, rule: str | dict[str, Any]) -> Segment:
    return compile_segment(SegmentDefinition(name=name, rule=rule))


def definitions(
    rules: dict[str, str] = RULES, recheck: timedelta = HOUR, traits: Any = TRAITS
) -> Definitions:
    return Definitions.build(traits, [segment(n, r) for n, r in rules.items()], recheck)


def event(
    kind: str = "track",
    name: str | None = "Clicked",
    at: datetime = T0,
    *,
    received: datetime | None = None,
    traits: dict[str, Any] | None = None,
    **properties: Any,
) -> Event:
    return Event(
        type=kind,  # type: ignore[arg-type]  # the tests pass valid types
        message_id=f"m{next(_ids)}",
        source="test",
        received_at=received or at,
        timestamp=at,
        user_id="u",
        event=name if kind == "track" else None,
        traits=traits or {},
        properties=properties,
    )


# -- definitions ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "vip", "high-intent_runner", "9lives", "x" * 64])
def test_good_segment_names(name: str) -> None:
    assert segment(name, "true").name == name


@pytest.mark.parametrize(
    "name", ["", "VIP", "-x", "_x", "a b", "x" * 65, "a/b", "a.b", "é", "../etc"]
)
def test_bad_segment_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        segment(name, "true")
    assert raised.value.details[0].location == "name"


@pytest.mark.parametrize(
    ("rule", "root"),
    [
        ('event.name == "Order Completed"', "event"),
        ('"vip" in segments', "segments"),
        ('context.channel == "web"', "context"),
    ],
)
def test_segments_read_the_profile_only(rule: str, root: str) -> None:
    with pytest.raises(RuleError) as raised:
        segment("x", rule)
    assert root in str(raised.value.details)


def test_the_version_follows_the_definition() -> None:
    a = segment("a", 'traits.plan == "pro"')
    assert segment("a", 'traits.plan == "pro"').version == a.version
    assert segment("a", 'traits.plan == "team"').version != a.version
    described = compile_segment(
        SegmentDefinition(name="a", rule='traits.plan == "pro"', description="d")
    )
    assert described.version != a.version


@pytest.mark.parametrize(
    ("data", "word"),
    [
        ({"rule": "true"}, "name"),
        ({"name": "x"}, "rule"),
        ({"name": "x", "rule": "true", "extra": 1}, "extra"),
        ({"name": 3, "rule": "true"}, "name"),
        ({"name": "x", "rule": 3}, "rule"),
        ([], "object"),
    ],
)
def test_parse_definition_names_the_bad_field(data: Any, word: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_definition(data, "file.yaml[0]")
    assert word in raised.value.message
    assert raised.value.details[0].location == "file.yaml[0]"


# -- the index --------------------------------------------------------------------------------


def test_the_index_maps_inputs_to_the_segments_that_read_them() -> None:
    index = definitions().index
    assert index.every_event == {"recent", "clicker"}
    every = set(index.every_event)
    assert index.affected([], []) == every
    # "described" reads the whole traits map, "no-plan" reads traits.plan
    assert index.affected(["plan"], []) == every | {"pro", "pro-buyer", "described", "no-plan"}
    assert index.affected(["email"], []) == every | {"described"}
    assert index.affected([], ["orders"]) == every | {"pro-buyer", "any-computed"}
    assert index.affected([], ["views_7d"]) == every | {"browser", "any-computed"}
    assert index.affected([], ["unknown"]) == every | {"any-computed"}


def test_timed_segments_are_those_that_move_with_the_clock() -> None:
    index = definitions().index
    # a window slides, days_since_last counts days even over a lifetime, now() moves
    assert index.timed == {"browser", "lapsing", "recent", "any-computed"}
    assert index.computed_used_by({"browser", "lapsing"}) == {"views_7d", "days_since_order"}
    assert index.computed_used_by({"any-computed"}) >= {"views_7d", "days_since_order"}
    assert definitions(traits=[]).index.timed == {"recent"}
    assert SegmentIndex([], frozenset()).affected(["plan"], ["x"]) == set()


# -- the qualifier ------------------------------------------------------------------------------


def run(
    qualifier: Qualifier,
    profile: Profile,
    e: Event,
    *,
    every: bool = False,
    created: bool = False,
    now: datetime | None = None,
) -> Qualification:
    out = Qualification()
    apply_event(profile, e)
    qualifier.on_event(
        profile, e, b"{}", now or e.received_at, out, every_segment=every, created=created
    )
    return out


def test_a_new_profile_is_evaluated_against_every_segment() -> None:
    qualifier = Qualifier(definitions())
    profile = Profile(id="p", created_at=T0)
    first = event()
    out = run(qualifier, profile, first, every=True)
    # nothing changed "traits.plan", yet a profile with no plan is in "no-plan"
    assert {(c.segment, c.entered, c.cause) for c in out.changes} == {
        ("no-plan", True, first.message_id),
        ("recent", True, first.message_id),
    }
    assert profile.segments == {"no-plan": T0, "recent": T0}


def test_an_event_evaluates_only_the_segments_it_can_change() -> None:
    qualifier = Qualifier(definitions())
    profile = Profile(id="p", created_at=T0)
    run(qualifier, profile, event(), every=True)
    identify = event("identify", traits={"plan": "pro"})
    out = run(qualifier, profile, identify)
    changes = {(c.segment, c.entered, c.cause) for c in out.changes}
    assert changes == {("pro", True, identify.message_id), ("no-plan", False, identify.message_id)}
    # an order: pro-buyer, not browser
    out = run(qualifier, profile, event(name="Order Completed", revenue=5))
    assert {(c.segment, c.entered) for c in out.changes} == {("pro-buyer", True)}
    assert profile.segments["pro-buyer"] == T0


def test_timers_follow_the_earliest_time_based_change() -> None:
    no_now = {k: v for k, v in RULES.items() if k != "recent"}
    qualifier = Qualifier(definitions(no_now))
    profile = Profile(id="p", created_at=T0)
    out = run(qualifier, profile, event(), every=True)
    assert out.timers == {"p": None}  # nothing in the profile moves with time
    out = run(qualifier, profile, event(name="Order Completed"))
    assert out.timers == {"p": T0 + timedelta(days=1)}  # days_since_order's next day
    out = run(qualifier, profile, event(name="Product Viewed"))
    assert out.timers == {}  # the due time did not move: the timer is not written again
    assert profile.next_check == T0 + timedelta(days=1)
    # with a now() rule, the recheck interval bounds the wait
    qualifier = Qualifier(definitions(recheck=timedelta(minutes=5)))
    out = run(qualifier, profile, event())
    assert out.timers == {"p": T0 + timedelta(minutes=5)}


def test_a_kept_due_time_moves_forward_for_a_late_event_in_an_older_bucket() -> None:
    qualifier = Qualifier(definitions({"browser": RULES["browser"]}))
    profile = Profile(id="p", created_at=T0)
    run(qualifier, profile, event(name="Product Viewed", at=T0 + 3 * DAY), every=True)
    assert profile.next_check == T0 + 10 * DAY  # the 6-hour bucket of day 3, plus 7 days
    # another view in that bucket moves nothing: the timer is not written again
    out = run(qualifier, profile, event(name="Product Viewed", at=T0 + 3 * DAY + HOUR))
    assert out.timers == {}
    # a late view, of day 1, opens an older bucket: its expiry is sooner
    late = event(name="Product Viewed", at=T0 + DAY, received=T0 + 3 * DAY + HOUR)
    out = run(qualifier, profile, late, now=T0 + 3 * DAY + HOUR)
    assert out.timers == {"p": T0 + 8 * DAY}


def test_a_kept_due_time_moves_forward_when_a_day_count_restarts() -> None:
    """A later order lands in days_since_last's one bucket (no bucket is opened), yet the
    next whole day comes sooner: the exit and re-entry still happen on time."""
    qualifier = Qualifier(definitions({"lapsed-1d": "computed.days_since_order >= 1"}))
    profile = Profile(id="p", created_at=T0)
    run(qualifier, profile, event(name="Order Completed"), every=True)
    assert profile.next_check == T0 + DAY
    due = T0 + DAY
    for days in (1, 2):  # the timer fires each day while the profile is in the segment
        out = Qualification()
        qualifier.on_timer(profile, T0 + days * DAY, out)
        due = T0 + (days + 1) * DAY
        assert profile.next_check == due
    assert "lapsed-1d" in profile.segments
    now = T0 + 2 * DAY + 12 * HOUR
    order = event(name="Order Completed", at=T0 + DAY + 14 * HOUR, received=now)
    out = run(qualifier, profile, order, now=now)
    assert [(c.segment, c.entered) for c in out.changes] == [("lapsed-1d", False)]
    assert out.timers == {"p": T0 + 2 * DAY + 14 * HOUR}  # not the day-3 timer kept before
    out = Qualification()
    qualifier.on_timer(profile, T0 + 2 * DAY + 14 * HOUR, out)
    assert [(c.segment, c.entered) for c in out.changes] == [("lapsed-1d", True)]


def test_a_timer_evaluates_the_timed_segments_at_its_time() -> None:
    qualifier = Qualifier(definitions({"browser": RULES["browser"], "pro": RULES["pro"]}))
    profile = Profile(id="p", created_at=T0)
    run(qualifier, profile, event(name="Product Viewed"), every=True)
    run(qualifier, profile, event(name="Product Viewed"))
    assert set(profile.segments) == {"browser"}
    profile.traits.clear()  # pro is not timed: a timer does not evaluate it
    out = Qualification()
    due = T0 + timedelta(days=7)
    qualifier.on_timer(profile, due, out)
    assert [(c.segment, c.entered, c.at, c.cause) for c in out.changes] == [
        ("browser", False, due, "schedule")
    ]
    assert profile.computed == {}  # pruned: the views left the window
    assert out.timers == {"p": None}


def test_a_merged_away_profile_leaves_every_segment_still_defined() -> None:
    qualifier = Qualifier(definitions())
    merged = Profile(
        id="old", created_at=T0, segments={"pro": T0, "browser": T0, "deleted-since": T0}
    )
    out = Qualification()
    qualifier.on_merged_away(merged, T0 + HOUR, out)
    assert {(c.profile_id, c.segment, c.entered, c.cause) for c in out.changes} == {
        ("old", "pro", False, "merged"),
        ("old", "browser", False, "merged"),
    }
    assert merged.segments == {}
    assert out.timers == {"old": None}


def test_a_backfill_keeps_the_rows_of_unchanged_members_and_drops_deleted_segments() -> None:
    qualifier = Qualifier(definitions({"pro": RULES["pro"]}))
    profile = Profile(id="p", created_at=T0, segments={"pro": T0, "deleted": T0})
    apply_event(profile, event("identify", traits={"plan": "pro"}))
    out = Qualification()
    qualifier.on_backfill(profile, {"pro"}, T0 + HOUR, out)
    assert out.changes == []
    assert out.kept == [MembershipChange("p", "pro", True, T0, "backfill")]
    assert profile.segments == {"pro": T0}  # "deleted" is no longer defined


def test_the_outbox_row_of_a_change() -> None:
    row = outbox_row(MembershipChange("p", "pro", False, T0, "m1"))
    assert (row.kind, row.profile_id, row.at) == ("segment", "p", T0)
    assert json.loads(row.payload) == {
        "type": "segment",
        "event": "Segment Exited",
        "segment": "pro",
        "profileId": "p",
        "at": "2026-03-02T00:00:00Z",
        "cause": "m1",
    }


# -- property: what the qualifier keeps equals a from-scratch evaluation ------------------------

STEP = st.fixed_dictionaries(
    {
        "advance": st.sampled_from([0, 60, 5 * 3600, 86400 - 1, 86400, 2 * 86400 + 7]),
        "kind": st.sampled_from(["identify", "Product Viewed", "Order Completed", "Clicked"]),
        "offset": st.integers(min_value=-3 * 86400, max_value=1800),  # event time vs now
        "plan": st.sampled_from([None, "pro", "free"]),
        "revenue": st.sampled_from([10, 60]),
    }
)


# RULES with a profile fact the first event makes true and a rule of the clock alone; and
# RULES without now() rules (their recheck interval would bound every due time)
PROPERTY_RULES = {
    "with now()": {
        **RULES,
        "seen": "profile.events_applied >= 1",
        "from-march-3": 'now() >= date("2026-03-03")',  # reads nothing but the clock
    },
    "without now()": {k: v for k, v in RULES.items() if k != "recent"} | {"always": "true"},
}


@pytest.mark.parametrize("rules", PROPERTY_RULES.values(), ids=PROPERTY_RULES.keys())
@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEP, min_size=1, max_size=12))
def test_memberships_and_due_times_follow_a_from_scratch_evaluation(
    rules: dict[str, str], steps: list[dict[str, Any]]
) -> None:
    """One profile through events and the timers that come due, as the processor drives the
    qualifier: after each step it is in exactly the segments a from-scratch evaluation finds
    (but for now() rules, which are checked on a schedule), its kept due time is never later
    than the next time-based change, and the first event starts from the empty profile."""
    defs = definitions(rules)
    qualifier = Qualifier(defs)
    profile = Profile(id="p", created_at=T0)
    now = T0
    for n, step in enumerate(steps):
        now += timedelta(seconds=step["advance"])
        if profile.next_check is not None and profile.next_check <= now:
            qualifier.on_timer(profile, now, Qualification())
        at = now + timedelta(seconds=step["offset"])
        if step["kind"] == "identify":
            e = event("identify", traits={"plan": step["plan"]}, at=at, received=now)
        else:
            e = event(name=step["kind"], at=at, received=now, revenue=step["revenue"])
        run(qualifier, profile, e, created=n == 0, now=now)
        values = computed.values(defs.computed, profile, now)
        data = rule_data(profile, values, now)
        expected = {name for name, s in defs.index.segments.items() if s.rule.evaluate(data)}
        # a now() rule is only as fresh as its last check, but a new profile has had one
        checked = {name for name, s in defs.index.segments.items() if not s.rule.uses_now}
        if n == 0:
            checked = set(defs.index.segments)
        assert set(profile.segments) & checked == expected & checked, (n, values)
        due = computed.next_change(defs.timed_computed, profile, now)
        if due is not None:
            assert profile.next_check is not None and profile.next_check <= due


def test_the_data_of_a_shape_is_what_its_rules_read_of_the_full_data() -> None:
    profile = Profile(id="p", created_at=T0)
    apply_event(profile, event("identify", traits={"plan": "pro", "email": "a@b"}))
    apply_event(profile, event(name="Clicked"))
    values = {"views_7d": 3, "orders": 1}
    full = rule_data(profile, values, T0)
    assert full == {  # every fact rules may read, spelled out here
        "traits": {"plan": "pro", "email": "a@b"},
        "computed": values,
        "profile": {
            "id": "p",
            "created_at": T0,
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "events_applied": 2,
            "event_counts": profile.event_counts,
            "type_counts": profile.type_counts,
            "consent": {k: s.value for k, s in profile.consent.items()},
            "context": {k: s.value for k, s in profile.context.items()},
        },
        "now": T0,
    }
    assert profile.last_seen is not None and full["profile"]["event_counts"]
    segments = [segment(name, rule) for name, rule in RULES.items()]
    shape = DataShape.read_by(segments)
    assert (shape.traits, shape.plain, shape.stamped) == (True, ("last_seen", "event_counts"), ())
    whole = DataShape.read_by([*segments, segment("whole", "len(profile) >= 1")])
    assert whole.data(profile, values, T0) == full
    for s in segments:
        shape = DataShape.read_by([s])
        assert s.rule.evaluate(shape.data(profile, values, T0)) == s.rule.evaluate(full)
    assert DataShape.read_by([segment("x", "computed.orders >= 1")]).data(profile, values, T0) == {
        "traits": {},
        "computed": values,
        "profile": {},
        "now": T0,
    }
