"""The decide path's shortcuts: offers sharing an eligibility rule evaluate it once a decision,
and rules over stored profile state once per profile state; neither changes what is eligible."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from relevo.decisions.catalog import Catalog, CatalogDefinitions, compile_catalog
from relevo.decisions.engine import Ask, Decider, DecideRequest
from relevo.learning.linear import RidgeModel
from relevo.learning.policy import Policy
from relevo.profiles.model import Profile, Stamped

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = {
    "mobile": 'context.device.type == "mobile"',
    "gold": 'traits.plan == "gold"',
    "web": 'context.channel == "web"',
}


class _NoModels:
    def policy(self, placement: Any) -> Policy:
        raise AssertionError("priority placements use no model")

    def shadow(self, placement: Any) -> Policy:
        raise AssertionError("priority placements use no model")

    def propensity(self, placement: Any) -> RidgeModel:
        raise AssertionError("priority placements use no model")


def counted_catalog(calls: list[str]) -> Catalog:
    """Three offers for each rule of ``RULES`` (and one with none); every evaluation of an
    offer's rule is appended to ``calls`` as the rule's name."""
    offers = [
        {"id": f"{name}-{i}", "placements": ["home"], "eligibility": rule, "priority": 10 - i}
        for name, rule in RULES.items()
        for i in range(3)
    ]
    offers.append({"id": "anyone", "placements": ["home"]})
    catalog = compile_catalog(
        msgspec.convert(
            {"placements": [{"id": "home", "max_offers": 20}], "offers": offers},
            CatalogDefinitions,
        )
    )
    names = {rule: name for name, rule in RULES.items()}
    counted = {}
    for offer_id, offer in catalog.offers.items():
        if offer.predicate is None:
            counted[offer_id] = offer
            continue
        name = names[offer.definition.eligibility or ""]
        counted[offer_id] = _counting(offer, name, calls)
    placement = catalog.placements["home"]
    placements = {"home": replace(placement, offers=tuple(counted[o.id] for o in placement.offers))}
    return replace(catalog, offers=counted, placements=placements)


def _counting(offer: Any, name: str, calls: list[str]) -> Any:
    predicate = offer.predicate
    assert predicate is not None

    def count(data: Mapping[str, Any]) -> bool:
        calls.append(name)
        return bool(predicate(data))

    copy = replace(offer)
    object.__setattr__(copy, "predicate", count)
    return copy


def no_computed_traits(profile: Profile, now: datetime) -> dict[str, Any]:
    return {}


def decider(catalog: Catalog) -> Decider:
    return Decider(lambda: catalog, _NoModels(), dict, no_computed_traits, holdout_percent=0)


def gold_profile() -> Profile:
    return Profile(
        id="p1", created_at=NOW, traits={"plan": Stamped("gold", NOW, "m1")}, segments={}
    )


def served(decider: Decider, profile: Profile | None, context: dict[str, Any]) -> list[str]:
    request = DecideRequest([Ask("home")], context, "unit")
    [decision] = decider.decide(profile, request, NOW)
    return [s.offer.id for s in decision.served]


def test_offers_sharing_a_rule_evaluate_it_once_a_decision() -> None:
    calls: list[str] = []
    engine = decider(counted_catalog(calls))
    mobile_web = {"device": {"type": "mobile"}, "channel": "web"}
    offers = served(engine, None, mobile_web)
    assert sorted(calls) == ["gold", "mobile", "web"]
    assert sorted(offers) == sorted(
        ["anyone", "mobile-0", "mobile-1", "mobile-2", "web-0", "web-1", "web-2"]
    )
    calls.clear()
    assert sorted(served(engine, None, {"channel": "email"})) == ["anyone"]
    assert sorted(calls) == ["gold", "mobile", "web"]  # a new decision, new results


def test_rules_over_stored_state_are_evaluated_once_per_profile_state() -> None:
    calls: list[str] = []
    engine = decider(counted_catalog(calls))
    profile = gold_profile()
    first = served(engine, profile, {"channel": "web"})
    assert {"gold-0", "gold-1", "gold-2"} <= set(first)
    assert sorted(calls) == ["gold", "mobile", "web"]
    calls.clear()
    assert served(engine, profile, {"channel": "app"}).count("gold-0") == 1
    assert sorted(calls) == ["mobile", "web"]  # the profile's rule is remembered
    calls.clear()
    changed = msgspec.structs.replace(profile, traits={"plan": Stamped("free", NOW, "m2")})
    assert not {"gold-0", "gold-1", "gold-2"} & set(served(engine, changed, {}))
    assert sorted(calls) == ["gold", "mobile", "web"]  # a changed profile is a new state
