"""``POST /v1/decide`` and the catalog API over the in-process app, its processor running.

Eligibility (rules over traits, segments and the request's context), start/end, channels;
every cap (per-profile frequency caps of an offer and of a placement, offer budgets, global
placement limits), counted on impressions and not on decisions; experiments (sticky) and the
holdout; content rendered from allowlisted fields only; the debug explanation (admin only);
write-key callers with verified identities; the decision log, feedback and results.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from relevo.config import Settings
from relevo.decisions.identity import sign_token, user_hash
from relevo.services import Services
from relevo.testing.calls import identify, track

Eventually = Any
Keys = Any
SECRET = "identity-secret-for-tests"

CATALOG = {
    "placements": [
        {
            "id": "home_hero",
            "max_offers": 2,
            "default_offer": "generic",
            "expose": ["traits.first_name", "segments"],
            "frequency_caps": [{"impressions": 5, "per": "1d"}],
        },
        {"id": "checkout", "channels": ["web"], "limits": [{"impressions": 2, "per": "1d"}]},
        {"id": "banner", "arbitration": "pvl"},
    ],
    "offers": [
        {
            "id": "vip_sale",
            "placements": ["home_hero"],
            "priority": 10,
            "eligibility": '"vips" in segments',
            "content": {"title": "Hi {{ profile.traits.first_name | default('there') }}"},
        },
        {
            "id": "mobile_app",
            "placements": ["home_hero"],
            "priority": 5,
            "eligibility": 'context.device.type == "mobile"',
            "content": {"title": "Get the app"},
            "frequency_caps": [{"impressions": 1, "per": "1d"}],
        },
        {
            "id": "secret_leak",
            "placements": ["home_hero"],
            "priority": 3,
            "eligibility": 'traits.plan == "gold"',
            "content": {"title": "{{ profile.traits.email }}|{{ traits.email }}"},
        },
        {
            "id": "winter",
            "placements": ["home_hero"],
            "priority": 20,
            "start": "2030-01-01T00:00:00Z",
            "content": {"title": "not yet"},
        },
        {"id": "generic", "placements": ["home_hero"], "priority": 0, "content": {"t": "g"}},
        {
            "id": "limited",
            "placements": ["checkout"],
            "priority": 5,
            "budget": {"impressions": 1},
            "content": {"t": "limited"},
        },
        {"id": "plain", "placements": ["checkout"], "priority": 1, "content": {"t": "plain"}},
        {"id": "cheap", "placements": ["banner"], "value": 1, "propensity": 0.5},
        {"id": "dear", "placements": ["banner"], "value": 10, "propensity": 0.1},
        {"id": "boosted", "placements": ["banner"], "value": 1, "propensity": 0.5, "lever": 3},
    ],
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    directory = tmp_path / "definitions"
    (directory / "segments").mkdir(parents=True)
    (directory / "decisions").mkdir()
    (directory / "segments" / "vips.yaml").write_text(
        yaml.safe_dump({"name": "vips", "rule": 'traits.tier == "vip"'})
    )
    (directory / "decisions" / "catalog.yaml").write_text(yaml.safe_dump(CATALOG))
    return make_settings(definitions_dir=str(directory), log_sync=False, identity_secret=SECRET)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


class Api:
    def __init__(
        self, client: httpx.AsyncClient, keys: Keys, services: Services, eventually: Eventually
    ) -> None:
        self.client = client
        self.keys = keys
        self.services = services
        self.eventually = eventually
        self.n = 0

    async def send(self, *events: dict[str, Any]) -> None:
        response = await self.client.post(
            "/v1/batch", json={"batch": list(events)}, headers=basic(self.keys.write)
        )
        assert response.status_code == 200, response.text
        await self.eventually(self.services.processor.caught_up, what="the processor")

    def mid(self) -> str:
        self.n += 1
        return f"m-{self.n}"

    async def decide_raw(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/decide", json=body, headers=headers or bearer(self.keys.server)
        )

    async def decide(self, user: str, *placements: Any, **extra: Any) -> list[dict[str, Any]]:
        response = await self.decide_raw({"userId": user, "placements": list(placements), **extra})
        assert response.status_code == 200, response.text
        decisions: list[dict[str, Any]] = response.json()["decisions"]
        return decisions

    async def offers(self, user: str, placement: str, **extra: Any) -> list[str]:
        decision = (await self.decide(user, placement, **extra))[0]
        return [o["id"] for o in decision["offers"]]

    async def view(self, user: str, decision: dict[str, Any], kind: str = "impression") -> None:
        for offer in decision["offers"]:
            event = offer["feedback"][kind]
            await self.send(track(user, self.mid(), event["event"], **event["properties"]))


@pytest.fixture
async def api(
    app_client: httpx.AsyncClient, keys: Keys, services: Services, eventually: Eventually
) -> Api:
    return Api(app_client, keys, services, eventually)


async def test_eligibility_follows_segments_traits_context_and_dates(api: Api) -> None:
    await api.send(identify("u1", api.mid(), first_name="Ada"))
    assert await api.offers("u1", "home_hero") == ["generic"]
    await api.send(identify("u1", api.mid(), tier="vip"))
    assert await api.offers("u1", "home_hero") == ["vip_sale", "generic"]
    mobile = {"context": {"device": {"type": "mobile"}}}
    assert await api.offers("u1", "home_hero", **mobile) == ["vip_sale", "mobile_app"]
    # an unknown profile gets what needs no profile
    assert await api.offers("nobody", "home_hero", **mobile) == ["mobile_app", "generic"]


async def test_channel_of_a_placement(api: Api) -> None:
    assert await api.offers("u1", "checkout", context={"channel": "web"}) == ["limited"]
    assert await api.offers("u1", "checkout", context={"channel": "email"}) == []


async def test_content_renders_only_exposed_fields(api: Api) -> None:
    await api.send(
        identify("u2", api.mid(), first_name="Grace", email="grace@example.com", plan="gold")
    )
    await api.send(identify("u2", api.mid(), tier="vip"))
    response = await api.decide_raw({"userId": "u2", "placements": ["home_hero"]})
    assert "grace@example.com" not in response.text
    offers = response.json()["decisions"][0]["offers"]
    assert offers[0]["content"] == {"title": "Hi Grace"}
    # ask for more offers: the gold offer's template reads the email, which is not exposed
    body = {"userId": "u2", "placements": [{"id": "home_hero", "limit": 2}]}
    response = await api.decide_raw({**body, "context": {"device": {"type": "tv"}}})
    assert "grace@example.com" not in response.text
    assert response.json()["decisions"][0]["offers"][1] == {
        **response.json()["decisions"][0]["offers"][1],
        "id": "secret_leak",
        "content": {"title": "|"},
    }


async def test_frequency_caps_count_impressions_not_decisions(api: Api) -> None:
    mobile = {"context": {"device": {"type": "mobile"}}}
    for _ in range(3):  # decided thrice, never shown: the cap of 1 a day is untouched
        assert "mobile_app" in await api.offers("u3", "home_hero", **mobile)
    decision = (await api.decide("u3", "home_hero", **mobile))[0]
    await api.view("u3", decision)
    await api.view("u3", decision)  # the same impression reported twice counts once
    assert "mobile_app" not in await api.offers("u3", "home_hero", **mobile)
    api.services.clock.advance(days=1, seconds=1)  # type: ignore[attr-defined]
    assert "mobile_app" in await api.offers("u3", "home_hero", **mobile)


async def test_placement_frequency_cap_per_profile(api: Api) -> None:
    for _ in range(5):  # the generic offer shown 5 times: the placement's cap of 5 a day
        await api.view("u4", (await api.decide("u4", "home_hero"))[0])
    assert await api.offers("u4", "home_hero") == []
    debug = await api.decide_raw(
        {"userId": "u4", "placements": ["home_hero"], "debug": True}, bearer(api.keys.admin)
    )
    reasons = {c["reason"] for c in debug.json()["decisions"][0]["explanation"]["candidates"]}
    assert reasons == {"placement_frequency_cap"}
    assert await api.offers("u5", "home_hero") == ["generic"]  # others are not capped


async def test_offer_budget_and_placement_limit_across_profiles(api: Api) -> None:
    web = {"context": {"channel": "web"}}
    first = (await api.decide("b1", "checkout", **web))[0]
    assert [o["id"] for o in first["offers"]] == ["limited"]
    await api.view("b1", first)
    api.services.decisions.refresh()
    # the budget of 1 impression is spent: every profile now gets the next offer
    second = (await api.decide("b2", "checkout", **web))[0]
    assert [o["id"] for o in second["offers"]] == ["plain"]
    await api.view("b2", second)
    api.services.decisions.refresh()
    # 2 impressions in the placement today: its limit is reached for everyone
    assert await api.offers("b3", "checkout", **web) == []
    api.services.clock.advance(days=1, hours=1)  # type: ignore[attr-defined]
    api.services.decisions.refresh()
    assert await api.offers("b3", "checkout", **web) == ["plain"]  # the budget is lifetime


async def test_propensity_value_lever_ranks(api: Api) -> None:
    decision = (await api.decide("p1", {"id": "banner"}))[0]
    assert decision["policy"] == "pvl"
    assert [o["id"] for o in decision["offers"]] == ["boosted"]  # 0.5 * 1 * 3 > 0.1 * 10 > 0.5
    debug = await api.decide_raw(
        {"userId": "p1", "placements": ["banner"], "debug": True}, bearer(api.keys.admin)
    )
    scores = {
        c["offer"]: c["score"] for c in debug.json()["decisions"][0]["explanation"]["candidates"]
    }
    assert scores == pytest.approx({"boosted": 1.5, "dear": 1.0, "cheap": 0.5})


async def test_debug_explains_and_needs_an_admin_key(api: Api) -> None:
    await api.send(identify("d1", api.mid(), tier="vip"))
    body = {"userId": "d1", "placements": ["home_hero"], "debug": True}
    assert (await api.decide_raw(body)).status_code == 403  # a server key
    response = await api.decide_raw(body, bearer(api.keys.admin))
    assert response.status_code == 200, response.text
    explanation = response.json()["decisions"][0]["explanation"]
    rows = {c["offer"]: c for c in explanation["candidates"]}
    assert rows["winter"]["reason"] == "inactive"
    assert rows["mobile_app"]["reason"] == "ineligible"
    assert rows["vip_sale"] == {
        "offer": "vip_sale",
        "status": "eligible",
        "reason": None,
        "score": 10.0,
        "probability": 1.0,
        "served": True,
    }
    assert explanation["policy"] == "priority"
    assert explanation["features"]["segments=vips"] == 1.0
    # without debug nobody gets an explanation
    plain = await api.decide_raw({"userId": "d1", "placements": ["home_hero"]})
    assert "explanation" not in plain.json()["decisions"][0]


async def test_write_keys_need_verified_identities(api: Api) -> None:
    write = basic(api.keys.write)
    await api.send(identify("w1", api.mid(), tier="vip", first_name="Lin"))
    claim = {"userId": "w1", "placements": ["home_hero"]}
    assert (await api.decide_raw(claim, write)).status_code == 401
    wrong = {**claim, "userHash": user_hash("other-secret", "w1")}
    assert (await api.decide_raw(wrong, write)).status_code == 401
    verified = await api.decide_raw({**claim, "userHash": user_hash(SECRET, "w1")}, write)
    assert verified.status_code == 200, verified.text
    decision = verified.json()["decisions"][0]
    assert set(decision) == {"placement", "decision_id", "offers"}  # content only
    assert decision["offers"][0]["content"] == {"title": "Hi Lin"}
    now = api.services.clock.now()
    token = sign_token(SECRET, "w1", now + timedelta(minutes=5))
    by_token = await api.decide_raw({"profileToken": token, "placements": ["home_hero"]}, write)
    assert by_token.json()["decisions"][0]["offers"][0]["id"] == "vip_sale"
    expired = sign_token(SECRET, "w1", now - timedelta(seconds=1))
    late = await api.decide_raw({"profileToken": expired, "placements": ["home_hero"]}, write)
    assert late.status_code == 401
    anonymous = await api.decide_raw({"anonymousId": "a-1", "placements": ["home_hero"]}, write)
    assert anonymous.status_code == 200
    by_id = {"profileId": "prf_x", "placements": ["home_hero"]}
    assert (await api.decide_raw(by_id, write)).status_code == 403
    debug = {"anonymousId": "a-1", "placements": ["home_hero"], "debug": True}
    assert (await api.decide_raw(debug, write)).status_code == 403


async def test_bad_requests_get_4xx(api: Api) -> None:
    for body in (
        {"userId": "x", "placements": []},
        {"userId": "x"},
        {"placements": ["home_hero"]},
        {"userId": "x", "placements": [{"id": "home_hero", "limit": 0}]},
        {"userId": "", "placements": ["home_hero"]},
        {"userId": 5, "placements": ["home_hero"]},
    ):
        response = await api.decide_raw(body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["message"]
    unknown = await api.decide_raw({"userId": "x", "placements": ["nope"]})
    assert unknown.status_code == 404
    raw = await api.client.post("/v1/decide", content=b"{not json", headers=bearer(api.keys.server))
    assert raw.status_code == 400
    huge = {"userId": "x", "placements": ["home_hero"], "context": {"k": "v" * 70_000}}
    assert (await api.decide_raw(huge)).status_code == 413
    assert (await api.client.post("/v1/decide", json={})).status_code == 401


async def test_decisions_and_feedback_are_logged(api: Api) -> None:
    await api.send(identify("l1", api.mid(), tier="vip"))
    decision = (await api.decide("l1", "home_hero"))[0]
    await api.view("l1", decision)
    await api.view("l1", decision, "click")
    api.services.decisions.flush()
    logged = list(api.services.store.logged("home_hero"))
    assert [entry.record.id for entry in logged] == [decision["decision_id"]]
    entry = logged[0]
    assert [c.offer for c in entry.record.chosen] == ["vip_sale", "generic"]
    assert [c.probability for c in entry.record.chosen] == [1.0, 0.0]
    assert entry.impressions == {"vip_sale", "generic"}
    assert entry.clicks == {"vip_sale", "generic"}
    assert entry.record.features["segments=vips"] == 1.0


async def test_catalog_api_validates_and_audits(api: Api) -> None:
    admin = bearer(api.keys.admin)
    offer = {"id": "spring", "placements": ["home_hero"], "content": {"t": "{{ oops"}}
    bad = await api.client.post("/v1/offers", json=offer, headers=admin)
    assert bad.status_code == 400
    assert "content.t" in json.dumps(bad.json()["error"])
    unknown = {"id": "spring", "placements": ["nowhere"]}
    assert (await api.client.post("/v1/offers", json=unknown, headers=admin)).status_code == 400
    rule = {"id": "spring", "placements": ["home_hero"], "eligibility": "traits.x =="}
    assert (await api.client.post("/v1/offers", json=rule, headers=admin)).status_code == 400
    good = {"id": "spring", "placements": ["home_hero"], "priority": 99, "content": {"t": "s"}}
    created = await api.client.post("/v1/offers", json=good, headers=admin)
    assert created.status_code == 201, created.text
    assert (await api.client.post("/v1/offers", json=good, headers=admin)).status_code == 409
    server = bearer(api.keys.server)
    assert (await api.client.post("/v1/offers", json=good, headers=server)).status_code == 403
    assert (await api.offers("c1", "home_hero"))[0] == "spring"
    listed = await api.client.get("/v1/offers", headers=server)
    assert "spring" in {o["id"] for o in listed.json()["data"]}
    # a placement cannot go while offers name it
    gone = await api.client.delete("/v1/placements/home_hero", headers=admin)
    assert gone.status_code == 400
    assert (await api.client.delete("/v1/offers/spring", headers=admin)).status_code == 200
    assert (await api.client.get("/v1/offers/spring", headers=server)).status_code == 404
    assert "spring" not in await api.offers("c1", "home_hero")
    actions = [
        row[0]
        for row in api.services.store._reader().execute(
            "SELECT action FROM audit_log ORDER BY rowid"
        )
    ]
    assert actions[-2:] == ["offer.create", "offer.delete"]


def test_a_bad_catalog_file_stops_the_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from relevo.errors import ValidationError
    from relevo.services import build_services

    directory = tmp_path / "bad"
    (directory / "decisions").mkdir(parents=True)
    (directory / "decisions" / "c.yaml").write_text(
        yaml.safe_dump({"offers": [{"id": "x", "placements": ["missing"]}]})
    )
    with pytest.raises(ValidationError, match="c.yaml"):
        build_services(make_settings(definitions_dir=str(directory)))
