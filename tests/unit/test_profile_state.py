"""Profile state: folding events into a profile, and merging two profiles.

The merge must not care in which order two histories meet: folding each history and merging
gives the same state as folding them as one history, in any order.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from relevo.events.model import Event
from relevo.profiles.model import Profile, Stamped, decode_profile, encode_profile
from relevo.profiles.state import apply_event, consent_of, merge_into

T0 = datetime(2026, 11, 24, tzinfo=UTC)
_ids = itertools.count()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    type: str = "track",
    when: float = 0,
    *,
    message_id: str | None = None,
    **fields: Any,
) -> Event:
    base: dict[str, Any] = {
        "type": type,
        "message_id": message_id or f"m-{next(_ids):06d}",
        "source": "web",
        "received_at": T0,
        "timestamp": at(when),
        "user_id": "u-1",
    }
    if type == "track":
        base["event"] = "Viewed"
    base.update(fields)
    return Event(**base)


def fold(events: list[Event], profile_id: str = "p") -> Profile:
    profile = Profile(id=profile_id, created_at=T0)
    for event in events:
        apply_event(profile, event)
    return profile


def state(profile: Profile) -> dict[str, Any]:
    """Everything that must not depend on the order events and merges happen in."""
    return {
        "first_seen": profile.first_seen,
        "last_seen": profile.last_seen,
        "traits": profile.traits,
        "consent": profile.consent,
        "context": profile.context,
        "groups": profile.groups,
        "event_counts": profile.event_counts,
        "type_counts": profile.type_counts,
        "events_applied": profile.events_applied,
    }


class TestApplyEvent:
    def test_first_and_last_seen_follow_event_time_not_arrival(self) -> None:
        profile = fold([ev(when=10), ev(when=5), ev(when=20), ev(when=15)])
        assert (profile.first_seen, profile.last_seen) == (at(5), at(20))

    def test_counters_per_type_and_event_name(self) -> None:
        profile = fold(
            [
                ev(event="Viewed"),
                ev(event="Viewed"),
                ev(event="Bought"),
                ev("page", name="Install"),
                ev("page", name="Install"),
                ev("page"),  # no name: counted by type only
                ev("screen", name="Home"),
                ev("identify"),
            ]
        )
        assert profile.event_counts == {
            "Viewed": 2,
            "Bought": 1,
            "page:Install": 2,
            "screen:Home": 1,
        }
        assert profile.type_counts == {"track": 3, "page": 3, "screen": 1, "identify": 1}
        assert profile.events_applied == 8

    def test_identify_traits_are_stamped_with_their_event(self) -> None:
        event = ev("identify", 7, traits={"plan": "pro", "email": "a@x.io"})
        profile = fold([event])
        assert profile.traits["plan"] == Stamped("pro", at(7), event.message_id)
        assert profile.trait_values() == {"plan": "pro", "email": "a@x.io"}

    def test_a_later_identify_overwrites_a_trait(self) -> None:
        profile = fold(
            [ev("identify", 1, traits={"plan": "free"}), ev("identify", 2, traits={"plan": "pro"})]
        )
        assert profile.trait_values() == {"plan": "pro"}

    def test_an_older_event_arriving_late_does_not_overwrite_a_newer_trait(self) -> None:
        newer = ev("identify", 100, traits={"plan": "pro"})
        older = ev("identify", 50, traits={"plan": "free", "city": "Oslo"})
        profile = fold([newer, older])
        assert profile.traits["plan"] == Stamped("pro", at(100), newer.message_id)
        # ...but it still fills in what the newer one did not say
        assert profile.traits["city"] == Stamped("Oslo", at(50), older.message_id)

    def test_a_null_trait_is_a_value_that_wins_by_time(self) -> None:
        profile = fold(
            [ev("identify", 1, traits={"plan": "pro"}), ev("identify", 2, traits={"plan": None})]
        )
        assert profile.trait_values() == {"plan": None}

    def test_same_time_ties_are_broken_by_message_id_in_any_order(self) -> None:
        a = ev("identify", 5, message_id="m-a", traits={"plan": "a"})
        b = ev("identify", 5, message_id="m-b", traits={"plan": "b"})
        assert fold([a, b]).trait_values() == fold([b, a]).trait_values() == {"plan": "b"}

    def test_only_identify_sets_profile_traits(self) -> None:
        profile = fold(
            [
                ev(traits={"plan": "pro"}),
                ev("page", traits={"plan": "pro"}),
                ev("group", group_id="g-1", traits={"plan": "team"}),
            ]
        )
        assert profile.traits == {}

    def test_group_calls_keep_the_latest_group_traits(self) -> None:
        old = ev("group", 1, group_id="g-9", traits={"name": "Acme"})
        new = ev("group", 2, group_id="g-9", traits={"name": "Acme Inc", "seats": 5})
        profile = fold([new, old])
        assert profile.groups == {
            "g-9": Stamped({"name": "Acme Inc", "seats": 5}, at(2), new.message_id)
        }

    def test_encoded_profile_round_trips(self) -> None:
        profile = fold(
            [
                ev("identify", 1, traits={"plan": "pro", "n": 3}),
                ev(context={"ip": "1.2.3.4", "consent": {"categoryPreferences": {"ads": True}}}),
            ]
        )
        assert decode_profile(encode_profile(profile)) == profile


class TestConsent:
    def test_segment_category_preferences(self) -> None:
        context = {
            "consent": {
                "categoryPreferences": {
                    "Advertising": True,
                    "Analytics": False,
                    "Functional": "yes",  # not a boolean: ignored
                }
            }
        }
        assert consent_of(context) == {"Advertising": True, "Analytics": False}

    def test_rudderstack_consent_management(self) -> None:
        context = {
            "consentManagement": {
                "provider": "custom",
                "allowedConsentIds": ["analytics", 7],
                "deniedConsentIds": ["marketing"],
            }
        }
        assert consent_of(context) == {"analytics": True, "7": True, "marketing": False}

    @pytest.mark.parametrize(
        "context",
        [
            {},
            {"consent": "granted"},
            {"consent": {"categoryPreferences": ["ads"]}},
            {"consentManagement": {"allowedConsentIds": "ads"}},
            {"consentManagement": ["ads"]},
            {"consentManagement": {"allowedConsentIds": [None, {"id": 1}]}},
        ],
    )
    def test_malformed_consent_is_ignored(self, context: dict[str, Any]) -> None:
        assert consent_of(context) == {}

    def test_consent_on_the_profile_is_last_write_wins(self) -> None:
        grant = ev(when=1, context={"consent": {"categoryPreferences": {"ads": True}}})
        deny = ev(when=2, context={"consentManagement": {"deniedConsentIds": ["ads"]}})
        silent = ev(when=3)
        for order in ([grant, deny, silent], [deny, silent, grant]):
            profile = fold(order)
            assert profile.consent["ads"] == Stamped(False, at(2), deny.message_id)

    def test_consent_from_both_formats_in_one_profile(self) -> None:
        profile = fold(
            [
                ev(when=1, context={"consent": {"categoryPreferences": {"ads": True}}}),
                ev(when=2, context={"consentManagement": {"allowedConsentIds": ["email"]}}),
            ]
        )
        assert {k: s.value for k, s in profile.consent.items()} == {"ads": True, "email": True}


class TestContextFacts:
    def test_known_facts_are_kept_under_their_profile_names(self) -> None:
        context = {
            "device": {"type": "mobile"},
            "os": {"name": "iOS", "version": "18"},
            "app": {"name": "Shop", "version": "2.1"},
            "userAgent": "Mozilla/5.0",
            "locale": "en-US",
            "timezone": "Europe/Oslo",
            "ip": "1.2.3.4",
            "location": {"country": "NO", "city": "Oslo"},
            "library": {"name": "analytics.js", "version": "npm:next-1.84.3"},
            "page": {"url": "http://x"},  # not a profile fact
        }
        event = ev(when=3, context=context)
        profile = fold([event])
        assert {k: s.value for k, s in profile.context.items()} == {
            "device": {"type": "mobile"},
            "os": {"name": "iOS", "version": "18"},
            "app": {"name": "Shop", "version": "2.1"},
            "user_agent": "Mozilla/5.0",
            "locale": "en-US",
            "timezone": "Europe/Oslo",
            "ip": "1.2.3.4",
            "country": "NO",
            "city": "Oslo",
            "library": {"name": "analytics.js", "version": "npm:next-1.84.3"},
        }
        assert profile.context["ip"] == Stamped("1.2.3.4", at(3), event.message_id)

    @pytest.mark.parametrize("blank", ["", {}, None])
    def test_blank_facts_do_not_erase_known_ones(self, blank: object) -> None:
        profile = fold(
            [ev(when=1, context={"locale": "en-US"}), ev(when=2, context={"locale": blank})]
        )
        assert profile.context["locale"].value == "en-US"

    def test_location_that_is_not_an_object_is_ignored(self) -> None:
        profile = fold([ev(context={"location": "Oslo"})])
        assert "country" not in profile.context and "city" not in profile.context

    def test_the_latest_fact_wins_by_event_time(self) -> None:
        profile = fold(
            [ev(when=9, context={"ip": "9.9.9.9"}), ev(when=1, context={"ip": "1.1.1.1"})]
        )
        assert profile.context["ip"].value == "9.9.9.9"


class TestMergeInto:
    def test_merge_adds_counters_and_widens_the_seen_window(self) -> None:
        survivor = fold([ev(when=10, event="A"), ev(when=20, event="B")], "p1")
        merged = fold([ev(when=5, event="A"), ev("page", 30, name="Home")], "p2")
        merge_into(survivor, merged)
        assert (survivor.first_seen, survivor.last_seen) == (at(5), at(30))
        assert survivor.event_counts == {"A": 2, "B": 1, "page:Home": 1}
        assert survivor.type_counts == {"track": 3, "page": 1}
        assert survivor.events_applied == 4

    def test_merge_keeps_the_newest_trait_from_either_side(self) -> None:
        survivor = fold([ev("identify", 10, traits={"plan": "pro", "a": 1})], "p1")
        merged = fold(
            [
                ev("identify", 20, traits={"plan": "team"}),
                ev("identify", 5, traits={"a": 0, "b": 2}),
            ],
            "p2",
        )
        merge_into(survivor, merged)
        assert survivor.trait_values() == {"plan": "team", "a": 1, "b": 2}

    def test_merge_into_an_empty_profile(self) -> None:
        survivor = Profile(id="p1", created_at=T0)
        merged = fold([ev(when=3), ev(when=4)], "p2")
        merge_into(survivor, merged)
        assert (survivor.first_seen, survivor.last_seen) == (at(3), at(4))

    def test_merging_an_empty_profile_changes_nothing(self) -> None:
        survivor = fold([ev(when=3, context={"ip": "1.1.1.1"})], "p1")
        before = state(survivor)
        merge_into(survivor, Profile(id="p2", created_at=T0))
        assert state(survivor) == before

    def test_merged_from_records_the_whole_chain(self) -> None:
        a, b, c = (Profile(id=i, created_at=T0) for i in ("a", "b", "c"))
        merge_into(b, c)
        merge_into(a, b)
        assert a.merged_from == ["b", "c"]

    def test_timeline_sizes_add(self) -> None:
        a, b = Profile(id="a", created_at=T0), Profile(id="b", created_at=T0)
        a.timeline_size, b.timeline_size = 3, 4
        merge_into(a, b)
        assert a.timeline_size == 7


# -- properties -----------------------------------------------------------------------------------

_keys = st.sampled_from(["plan", "city", "email"])
_values = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["a", "b", "c"]))
_facts = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(["1.1.1.1", "2.2.2.2", ""]),
        "locale": st.sampled_from(["en-US", "nb-NO"]),
        "location": st.fixed_dictionaries({"country": st.sampled_from(["NO", "SE"])}),
        "consent": st.fixed_dictionaries(
            {
                "categoryPreferences": st.dictionaries(
                    st.sampled_from(["ads", "stats"]), st.booleans()
                )
            }
        ),
        "consentManagement": st.fixed_dictionaries(
            {"deniedConsentIds": st.lists(st.sampled_from(["ads", "email"]), max_size=2)}
        ),
    },
)


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "track", "page", "group"]))
    fields: dict[str, Any] = {
        "type": kind,
        "when": draw(st.integers(0, 6)),  # few distinct times: plenty of ties
        "context": draw(_facts),
    }
    if kind == "identify":
        fields["traits"] = draw(st.dictionaries(_keys, _values, max_size=3))
    elif kind == "track":
        fields["event"] = draw(st.sampled_from(["Viewed", "Bought"]))
    elif kind == "page":
        fields["name"] = draw(st.sampled_from(["Home", "Docs"]))
    else:
        fields["group_id"] = draw(st.sampled_from(["g1", "g2"]))
        fields["traits"] = draw(st.dictionaries(_keys, _values, max_size=2))
    return fields


def _histories(max_size: int) -> st.SearchStrategy[list[Event]]:
    """Histories of distinct calls (message ids are unique, as dedup guarantees)."""

    def build(specs: list[dict[str, Any]]) -> list[Event]:
        return [
            ev(spec.pop("type"), spec.pop("when"), message_id=f"m-{n:03d}", **spec)
            for n, spec in enumerate(specs)
        ]

    return st.lists(_event(), max_size=max_size).map(build)


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


@PROPERTY_SETTINGS
@given(history=_histories(24), cut=st.integers(0, 24))
def test_folding_two_histories_and_merging_equals_folding_them_together(
    history: list[Event], cut: int
) -> None:
    first, second = history[:cut], history[cut:]
    together = fold(history, "together")
    left, right = fold(first, "left"), fold(second, "right")
    merge_into(left, right)
    assert state(left) == state(together)
    # and in the other direction: who survives a merge does not matter
    left, right = fold(first, "left"), fold(second, "right")
    merge_into(right, left)
    assert state(right) == state(together)


@PROPERTY_SETTINGS
@given(history=_histories(16), data=st.data())
def test_the_order_events_arrive_in_does_not_change_the_state(
    history: list[Event], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(history))
    assert state(fold(shuffled)) == state(fold(history))


@PROPERTY_SETTINGS
@given(a=_histories(8), b=_histories(8), c=_histories(8))
def test_merges_are_associative(a: list[Event], b: list[Event], c: list[Event]) -> None:
    # message ids must be unique across the three histories
    c = [Event(**{**_fields(e), "message_id": f"c-{e.message_id}"}) for e in c]
    b = [Event(**{**_fields(e), "message_id": f"b-{e.message_id}"}) for e in b]
    pa, pb, pc = fold(a, "a"), fold(b, "b"), fold(c, "c")
    merge_into(pb, pc)
    merge_into(pa, pb)
    qa, qb, qc = fold(a, "a"), fold(b, "b"), fold(c, "c")
    merge_into(qa, qb)
    merge_into(qa, qc)
    assert state(pa) == state(qa) == state(fold([*a, *b, *c]))


def _fields(event: Event) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}
