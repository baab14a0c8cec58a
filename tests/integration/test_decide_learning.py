"""Experiments, the holdout, and learning from feedback, through the real pipeline.

Sticky A/B assignment with the configured split; the holdout getting the default experience;
results with intervals and uplift. A bandit placement learns from impressions and clicks
joined by the processor and the learner, its decide side reloads the learnt state, and in a
simulated shop where one offer is best for one segment and another for a second segment its
choices converge to the best ones (regret falls).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.decisions.engine import Ask, DecideRequest
from relevo.profiles.identifiers import USER_ID, Identifier
from relevo.services import Services
from relevo.testing.calls import identify, track

Keys = Any
Eventually = Any

CATALOG = {
    "placements": [
        {"id": "hero", "default_offer": "house"},
        {
            "id": "feed",
            "arbitration": "bandit",
            "bandit": {"algorithm": "lints", "features": ["segments"], "dim": 16, "seed": 7},
        },
    ],
    "offers": [
        {"id": "house", "placements": ["hero"], "priority": 1},
        {"id": "red", "placements": ["hero"], "priority": 5},
        {"id": "blue", "placements": ["hero"], "priority": 4},
        {"id": "runners", "placements": ["feed"]},
        {"id": "hikers", "placements": ["feed"]},
        {"id": "neither", "placements": ["feed"]},
    ],
    "experiments": [
        {
            "id": "colour",
            "placement": "hero",
            "variants": [
                {"name": "control", "weight": 70, "offers": ["red"]},
                {"name": "treatment", "weight": 30, "offers": ["blue"]},
            ],
        }
    ],
}
SEGMENTS = {
    "runners": 'traits.sport == "running"',
    "hikers": 'traits.sport == "hiking"',
}
# click probability of each offer for each segment: runners like "runners", hikers "hikers"
CLICKS = {
    "runners": {"runners": 0.6, "hikers": 0.15, "neither": 0.05},
    "hikers": {"runners": 0.15, "hikers": 0.6, "neither": 0.05},
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    directory = tmp_path / "definitions"
    (directory / "segments").mkdir(parents=True)
    (directory / "decisions").mkdir()
    for name, rule in SEGMENTS.items():
        (directory / "segments" / f"{name}.yaml").write_text(
            yaml.safe_dump({"name": name, "rule": rule})
        )
    (directory / "decisions" / "catalog.yaml").write_text(yaml.safe_dump(CATALOG))
    return make_settings(definitions_dir=str(directory), log_sync=False, holdout_percent=20)


class Shop:
    """Drives the pipeline by hand: collect, apply, learn, refresh."""

    def __init__(self, services: Services, write_key: str) -> None:
        self.services = services
        self.write_key = write_key
        self.n = 0

    def mid(self) -> str:
        self.n += 1
        return f"m{self.n}"

    async def send(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 500):
            body = json.dumps({"batch": events[start : start + 500]}).encode()
            result = await self.services.collect.collect(
                CollectRequest(body=body, implied_type=None, basic_user=self.write_key)
            )
            assert result.accepted == len(events[start : start + 500]), result.rejected
        self.services.decisions.flush()
        while self.services.processor.run_once():
            pass
        while self.services.learner.run_once():
            pass
        self.services.decisions.refresh()

    def decide(self, user: str, placement: str) -> Any:
        return self.services.decisions.decide(
            Identifier(USER_ID, user),
            f"user_id:{user}",
            DecideRequest([Ask(placement)], {}, f"user_id:{user}"),
        ).placements[0]


@pytest.fixture
async def shop(services: Services, keys: Keys) -> Shop:
    services.log.start()
    services.processor.load()
    services.learner.load()
    return Shop(services, keys.write)


async def test_experiment_assignment_is_sticky_and_split_as_weighted(shop: Shop) -> None:
    users = [f"e{i}" for i in range(600)]
    first = {u: shop.decide(u, "hero").record.variant for u in users}
    again = {u: shop.decide(u, "hero").record.variant for u in users}
    assert first == again
    counts = {v: list(first.values()).count(v) for v in ("control", "treatment", "holdout")}
    assert sum(counts.values()) == 600
    # 20 % holdout, then 70/30 of the rest: expected 120 / 336 / 144 (binomial sd ~10-12)
    assert abs(counts["holdout"] - 120) < 40
    assert abs(counts["control"] - 336) < 45
    assert abs(counts["treatment"] - 144) < 40
    served = {u: [s.offer.id for s in shop.decide(u, "hero").served] for u in users}
    for user, variant in first.items():
        expected = {"control": ["red"], "treatment": ["blue"], "holdout": ["house"]}[variant]
        assert served[user] == expected


async def test_results_report_rates_intervals_and_uplift(
    shop: Shop, app_client: httpx.AsyncClient, keys: Keys
) -> None:
    rng = random.Random(3)
    events: list[dict[str, Any]] = []
    for i in range(300):
        user = f"r{i}"
        decision = shop.decide(user, "hero")
        for served in decision.served:
            feedback = decision.feedback(served.offer)
            events.append(track(user, shop.mid(), **_event(feedback["impression"])))
            rate = {"red": 0.1, "blue": 0.3, "house": 0.05}[served.offer.id]
            if rng.random() < rate:
                events.append(track(user, shop.mid(), **_event(feedback["click"])))
    await shop.send(events)
    shop.services.decisions.flush()
    headers = {"Authorization": f"Bearer {keys.server}"}
    response = await app_client.get("/v1/experiments/colour/results", headers=headers)
    assert response.status_code == 200, response.text
    results = response.json()
    variants = {v["name"]: v for v in results["variants"]}
    assert set(variants) == {"control", "treatment"}
    control, treatment = variants["control"], variants["treatment"]
    assert control["impressions"] == control["decisions"] > 100
    assert 0 < control["click_rate"]["low"] < control["click_rate"]["rate"]
    assert control["click_rate"]["rate"] < control["click_rate"]["high"] < 1
    assert "click_uplift" not in control  # the control is the baseline
    assert treatment["click_uplift"]["relative"] > 0
    holdout = await app_client.get("/v1/placements/hero/results", headers=headers)
    groups = {g["name"]: g for g in holdout.json()["groups"]}
    assert groups["holdout"]["impressions"] > 20
    assert groups["personalised"]["impressions"] > 150
    assert groups["personalised"]["click_uplift"]["relative"] > 0


def _event(spec: dict[str, Any]) -> dict[str, Any]:
    return {"event": spec["event"], **spec["properties"]}


async def test_a_bandit_learns_each_segments_best_offer(shop: Shop) -> None:
    """Regret per decision falls from the first rounds to the last, and each segment ends up
    served its best offer most of the time."""
    rng = random.Random(11)
    users = {f"s{i}": "runners" if i % 2 else "hikers" for i in range(100)}
    sports = {"runners": "running", "hikers": "hiking"}
    await shop.send([identify(u, shop.mid(), sport=sports[s]) for u, s in users.items()])
    regrets: list[float] = []
    picks: dict[str, dict[str, int]] = {}
    for round_ in range(12):
        events: list[dict[str, Any]] = []
        regret = 0.0
        for user, segment in users.items():
            decision = shop.decide(user, "feed")
            if decision.record.variant == "holdout":
                continue
            offer = decision.served[0].offer.id
            regret += max(CLICKS[segment].values()) - CLICKS[segment][offer]
            if round_ >= 9:
                picks.setdefault(segment, {}).setdefault(offer, 0)
                picks[segment][offer] += 1
            feedback = decision.feedback(decision.served[0].offer)
            events.append(track(user, shop.mid(), **_event(feedback["impression"])))
            if rng.random() < CLICKS[segment][offer]:
                events.append(track(user, shop.mid(), **_event(feedback["click"])))
        regrets.append(regret)
        await shop.send(events)
    assert sum(regrets[-3:]) < 0.5 * sum(regrets[:3]), regrets
    for segment, counts in picks.items():
        assert max(counts, key=counts.__getitem__) == segment, picks


async def test_decide_sees_new_policy_state_within_a_second(
    app_client: httpx.AsyncClient, services: Services, keys: Keys, eventually: Eventually
) -> None:
    """With the node's own threads (processor, learner, refresher): a click's effect on the
    bandit reaches the decide side well within a second."""
    decision = services.decisions.decide(
        Identifier(USER_ID, "t1"), "user_id:t1", DecideRequest([Ask("feed")], {}, "user_id:t1")
    ).placements[0]
    feedback = decision.feedback(decision.served[0].offer)
    before = services.decisions.model_versions()
    events = [
        track("t1", "t-imp", **_event(feedback["impression"])),
        track("t1", "t-click", **_event(feedback["click"])),
    ]
    headers = {"Authorization": f"Bearer {keys.write}"}
    response = await app_client.post("/v1/batch", json={"batch": events}, auth=(keys.write, ""))
    assert response.status_code == 200, (response.text, headers)
    started = asyncio.get_running_loop().time()

    def reloaded() -> bool:
        now = services.decisions.model_versions()
        return any(now.get(name, 0) > before.get(name, 0) for name in now)

    await eventually(reloaded, timeout=5, what="the decide side to load the learnt policy")
    assert asyncio.get_running_loop().time() - started < 1.0
