"""The catalog's validation, caps arithmetic, feedback events and verified identities (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relevo.decisions.caps import (
    Cap,
    CapDefinition,
    compile_cap,
    counter_keys,
    record_impression,
    within_counter,
    within_profile_caps,
)
from relevo.decisions.catalog import compile_catalog, parse_definitions
from relevo.decisions.feedback import Attribution, feedback_of, remember_click
from relevo.decisions.identity import sign_token, user_hash, verify_token, verify_user_hash
from relevo.errors import AuthError, ValidationError
from relevo.events.model import Event
from relevo.profiles.model import EXPOSURES_KEPT, Profile

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def catalog(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "placements": [{"id": "hero", "default_offer": "a"}],
        "offers": [
            {"id": "a", "placements": ["hero"]},
            {"id": "b", "placements": ["hero"], "eligibility": 'traits.plan == "pro"'},
        ],
    }
    base.update(changes)
    return base


def error_location(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        compile_catalog(parse_definitions(data))
    return caught.value.details[0].location if caught.value.details else caught.value.message


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"offers": [{"id": "a", "placements": ["nowhere"]}]}, "offers[0].placements"),
        ({"offers": [{"id": "a", "placements": ["hero"], "eligibility": "x =="}]}, "line 1"),
        (
            {"offers": [{"id": "a", "placements": ["hero"], "content": {"t": "{{ x"}}]},
            "offers[0].content.t",
        ),
        (
            {
                "offers": [
                    {"id": "a", "placements": ["hero"], "budget": {"impressions": 1, "per": "90m"}}
                ]
            },
            "offers[0].budget",
        ),
        (
            {
                "offers": [
                    {"id": "a", "placements": ["hero"], "frequency_caps": [{"impressions": 3}]}
                ]
            },
            "offers[0].frequency_caps[0]",
        ),
        ({"placements": [{"id": "hero", "default_offer": "zzz"}]}, "placements[0].default_offer"),
        (
            {"placements": [{"id": "hero", "bandit": {"algorithm": "magic"}}]},
            "placements[0].bandit.algorithm",
        ),
        (
            {"placements": [{"id": "hero", "bandit": {"features": ["profile.created_at"]}}]},
            "placements[0].bandit.features",
        ),
        ({"placements": [{"id": "hero", "expose": ["secrets.x"]}]}, "placements[0].expose"),
        ({"placements": [{"id": "hero"}, {"id": "Hero!"}]}, "placements[1].id"),
    ],
)
def test_bad_definitions_are_refused_with_where(change: dict[str, Any], where: str) -> None:
    assert where in error_location(catalog(**change))


def test_unknown_fields_and_two_experiments_on_one_placement_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_definitions(catalog(placements=[{"id": "hero", "colour": "red"}]))
    variants = [{"name": "x", "weight": 1}, {"name": "y", "weight": 1}]
    twice = catalog(
        experiments=[
            {"id": "e1", "placement": "hero", "variants": variants},
            {"id": "e2", "placement": "hero", "variants": variants},
        ]
    )
    assert "experiments[1].placement" in error_location(twice)


def test_offers_are_in_priority_then_value_order() -> None:
    compiled = compile_catalog(
        parse_definitions(
            {
                "placements": [{"id": "p"}],
                "offers": [
                    {"id": "low", "placements": ["p"], "priority": 1, "value": 100},
                    {"id": "high", "placements": ["p"], "priority": 5},
                    {"id": "rich", "placements": ["p"], "priority": 1, "value": 200},
                ],
            }
        )
    )
    assert [o.id for o in compiled.placements["p"].offers] == ["high", "rich", "low"]
    assert compiled.offers["low"].profile_only is False  # no rule at all


def test_profile_only_rules_are_told_apart() -> None:
    compiled = compile_catalog(
        parse_definitions(
            {
                "placements": [{"id": "p"}],
                "offers": [
                    {"id": "t", "placements": ["p"], "eligibility": 'traits.plan == "pro"'},
                    {"id": "c", "placements": ["p"], "eligibility": 'context.channel == "web"'},
                    {"id": "w", "placements": ["p"], "eligibility": "computed.orders_30d > 1"},
                    {"id": "s", "placements": ["p"], "eligibility": '"vip" in segments'},
                ],
            }
        )
    )
    profile_only = {o.id: o.profile_only for o in compiled.offers.values()}
    assert profile_only == {"t": True, "c": False, "w": False, "s": True}


def test_profile_caps_slide_over_recent_impressions() -> None:
    caps = (Cap(2, 3600), Cap(3, 86400))
    now = T0.timestamp()
    assert within_profile_caps(caps, None, now)
    assert within_profile_caps(caps, [int(now - 100)], now)
    assert not within_profile_caps(caps, [int(now - 100), int(now - 50)], now)  # 2 an hour
    assert within_profile_caps(caps, [int(now - 4000), int(now - 50)], now)
    three = [int(now - 9000), int(now - 4000), int(now - 50)]
    assert not within_profile_caps(caps, three, now)  # 3 a day
    assert not within_profile_caps((Cap(0, 60),), None, now)


def test_a_profile_keeps_a_bounded_number_of_impressions() -> None:
    exposures: dict[str, list[int]] = {}
    for i in range(EXPOSURES_KEPT + 20):
        record_impression(exposures, "a", T0.timestamp() + i)
    assert len(exposures["a"]) == EXPOSURES_KEPT
    assert exposures["a"][-1] == int(T0.timestamp()) + EXPOSURES_KEPT + 19


def test_counters_cover_lifetime_and_whole_hour_windows() -> None:
    at = T0.timestamp()
    counters: dict[str, int] = {}
    for key, _ in counter_keys("offer", "a", at) + counter_keys("offer", "a", at - 7200):
        counters[key] = counters.get(key, 0) + 1
    assert counters["offer:a"] == 2
    assert within_counter(Cap(2, 3600), "offer", "a", counters, at)  # one this hour
    assert not within_counter(Cap(2, 3 * 3600), "offer", "a", counters, at)  # two in 3 hours
    assert not within_counter(Cap(2, None), "offer", "a", counters, at)
    with pytest.raises(ValidationError, match="whole hours"):
        compile_cap(CapDefinition(impressions=5, per="90m"), per_profile=False, where="x")


def _track(name: str, **properties: Any) -> Event:
    return Event(
        type="track",
        message_id="m1",
        source="web",
        received_at=T0,
        timestamp=T0,
        event=name,
        properties=properties,
    )


def test_feedback_events_and_attributed_conversions() -> None:
    profile = Profile(id="p1", created_at=T0)
    ids = {"decision_id": "d1", "offer_id": "o1", "placement": "hero"}
    [viewed] = feedback_of(_track("Offer Viewed", **ids), profile, {})
    assert (viewed.kind, viewed.decision_id, viewed.offer) == ("impression", "d1", "o1")
    [clicked] = feedback_of(_track("Offer Clicked", **ids), profile, {})
    remember_click(profile, clicked)
    attribution = {"Order Completed": (Attribution("hero", timedelta(days=1)),)}
    [order] = feedback_of(_track("Order Completed", revenue=30), profile, attribution)
    assert (order.kind, order.decision_id, order.offer, order.value) == (
        "conversion",
        "d1",
        "o1",
        30.0,
    )
    late = _track("Order Completed")
    late.timestamp = T0 + timedelta(days=2)
    assert feedback_of(late, profile, attribution) == []
    assert feedback_of(_track("Offer Viewed", decision_id=5), profile, {}) == []
    assert feedback_of(_track("Page Viewed"), profile, attribution) == []


def test_user_hashes_and_profile_tokens() -> None:
    assert verify_user_hash("s", "u1", user_hash("s", "u1"))
    assert not verify_user_hash("s", "u1", user_hash("other", "u1"))
    token = sign_token("s", "u1", T0 + timedelta(minutes=5))
    assert verify_token("s", token, T0) == "u1"
    for bad in (token + "x", token.replace("v1.", "v2."), "garbage", ""):
        with pytest.raises(AuthError):
            verify_token("s", bad, T0)
    with pytest.raises(AuthError, match="expired"):
        verify_token("s", token, T0 + timedelta(minutes=6))
    with pytest.raises(AuthError):
        verify_token("other", token, T0)
