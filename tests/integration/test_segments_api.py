"""The segments API over the in-process app, its processor thread running.

Admin keys create, update, delete, list and validate definitions (every change audited);
server keys read sizes and members (paginated) but change nothing. A rule that does not parse
or validate gets a 400 saying where and why, in the text and the JSON form; rules shaped like
code execution are refused. A new or edited segment is backfilled over the existing profiles in
the background, with progress reported; deleting a segment removes its members. Profiles show
their segments and computed traits.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from relevo.config import Settings
from relevo.pipeline.processor import Processor
from relevo.services import Services
from relevo.store.sqlite_db import sqlite_path

Eventually = Callable[..., Awaitable[None]]  # the conftest fixture
Keys = Any  # the conftest fixture: .write, .server, .admin

COMPUTED_TRAITS = [
    {"name": "orders_lifetime", "kind": "count", "event": "Order Completed"},
    {"name": "revenue_lifetime", "kind": "sum", "event": "Order Completed", "property": "revenue"},
]
PRO = {"name": "pros", "rule": 'traits.plan == "pro"', "description": "paying"}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    directory = tmp_path / "definitions"
    (directory / "segments").mkdir(parents=True)
    (directory / "segments" / "buyers.yaml").write_text(
        yaml.safe_dump({"name": "buyers", "rule": "computed.orders_lifetime >= 1"})
    )
    (directory / "computed_traits.yaml").write_text(
        yaml.safe_dump({"computed_traits": COMPUTED_TRAITS})
    )
    return make_settings(definitions_dir=str(directory), log_sync=False)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


class Gate:
    """Holds the background backfill before each chunk (of 2 profiles) until let through."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.open = False

    def release(self, chunks: int = 1) -> None:
        for _ in range(chunks):
            self.permits.release()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    real = Processor.run_backfill

    def gated(self: Processor, limit: int = 2) -> int:
        jobs = list(self.backfills())
        held = jobs and jobs[0] == "pros" and not gate.open  # only the segment under test
        if held and not gate.permits.acquire(timeout=0.05):
            return 0
        return real(self, limit=2)

    monkeypatch.setattr(Processor, "run_backfill", gated)
    yield gate
    gate.open = True
    gate.release(1000)


class Api:
    def __init__(
        self, client: httpx.AsyncClient, keys: Keys, services: Services, eventually: Eventually
    ) -> None:
        self.client = client
        self.keys = keys
        self.services = services
        self.eventually = eventually
        self.admin = bearer(keys.admin)
        self.server = bearer(keys.server)

    async def send(self, *events: dict[str, Any]) -> None:
        response = await self.client.post(
            "/v1/batch", json={"batch": list(events)}, headers=basic(self.keys.write)
        )
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events)
        processor = self.services.processor
        await self.eventually(processor.caught_up, what="the processor to catch up")

    async def segment(self, name: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/segments/{name}", headers=self.server)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def backfilled(self, name: str, size: int) -> dict[str, Any]:
        """Wait until the backfill of ``name`` is done; check its size."""
        found: dict[str, Any] = {}

        def done() -> bool:
            info = self.services.segments.info(name)
            return info.backfill is None and info.size == size

        await self.eventually(done, what=f"{name} backfilled to {size} members")
        found = await self.segment(name)
        assert found["backfill"] == {"state": "done"}
        assert found["size"] == size
        return found

    async def members(self, name: str, limit: int = 100) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        for _ in range(100):
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = await self.client.get(
                f"/v1/segments/{name}/members", params=params, headers=self.server
            )
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["data"]) <= limit
            ids.extend(m["profile_id"] for m in page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return ids
        raise AssertionError("pages never ended")

    async def profile(self, ref: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/profiles/{ref}", headers=self.server)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def api(
    app_client: httpx.AsyncClient, keys: Keys, services: Services, eventually: Eventually
) -> Api:
    return Api(app_client, keys, services, eventually)


def identify(user: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits, "messageId": f"{user}-{traits}"}


PLANS = {"u0": "pro", "u1": "free", "u2": "pro", "u3": "pro", "u4": "free"}


async def make_profiles(api: Api) -> dict[str, str]:
    """Five profiles; their ids by user."""
    await api.send(*(identify(user, plan=plan) for user, plan in PLANS.items()))
    return {user: (await api.profile(f"user_id:{user}"))["id"] for user in PLANS}


# -- backfill ----------------------------------------------------------------------------------


async def test_a_new_segment_is_backfilled_in_the_background_with_progress(
    api: Api, gate: Gate, services: Services
) -> None:
    ids = await make_profiles(api)
    pros = sorted(ids[u] for u, plan in PLANS.items() if plan == "pro")

    response = await api.client.post("/v1/segments", json=PRO, headers=api.admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "pros"
    assert created["rule"] == PRO["rule"]
    assert created["description"] == "paying"
    assert created["size"] == 0
    total = len(ids)
    assert created["backfill"] == {"state": "running", "done": 0, "total": total}

    gate.release()  # one chunk of two profiles
    await api.eventually(
        lambda: services.processor.backfills()["pros"].done == 2, what="a first chunk"
    )
    assert (await api.segment("pros"))["backfill"] == {
        "state": "running",
        "done": 2,
        "total": total,
    }
    gate.open = True
    gate.release()
    await api.backfilled("pros", len(pros))
    assert await api.members("pros") == pros

    # the profile API shows the membership, with when it was entered
    u0 = await api.profile("user_id:u0")
    assert set(u0["segments"]) == {"pros"}
    assert "entered_at" in u0["segments"]["pros"]
    listed = await api.client.get("/v1/profiles/user_id:u0/segments", headers=api.server)
    assert listed.json() == {
        "data": [{"segment": "pros", "entered_at": u0["segments"]["pros"]["entered_at"]}]
    }
    # and new events qualify in streaming from now on
    await api.send(identify("u5", plan="pro"))
    assert (await api.segment("pros"))["size"] == len(pros) + 1


async def test_editing_a_rule_backfills_again_and_deleting_removes_members(
    api: Api, gate: Gate, services: Services
) -> None:
    gate.open = True
    ids = await make_profiles(api)
    response = await api.client.post("/v1/segments", json=PRO, headers=api.admin)
    assert response.status_code == 201, response.text
    first = await api.backfilled("pros", 3)

    edited = {**PRO, "rule": 'traits.plan == "free"'}
    response = await api.client.put("/v1/segments/pros", json=edited, headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.json()["rule"] == edited["rule"]
    second = await api.backfilled("pros", 2)
    assert second["version"] != first["version"]
    assert await api.members("pros") == sorted([ids["u1"], ids["u4"]])
    assert set((await api.profile("user_id:u0"))["segments"]) == set()
    assert set((await api.profile("user_id:u1"))["segments"]) == {"pros"}

    response = await api.client.delete("/v1/segments/pros", headers=api.admin)
    assert response.status_code == 200, response.text
    assert error_of(await api.client.get("/v1/segments/pros", headers=api.server), 404)
    assert services.store.segment_size("pros") == 0
    assert (await api.profile("user_id:u1"))["segments"] == {}
    listed = await api.client.get("/v1/segments", headers=api.admin)
    assert [s["name"] for s in listed.json()["data"]] == ["buyers"]

    # created again under the same name: the old members count again, nothing lingers
    response = await api.client.post("/v1/segments", json=edited, headers=api.admin)
    assert response.status_code == 201, response.text
    await api.backfilled("pros", 2)
    assert await api.members("pros") == sorted([ids["u1"], ids["u4"]])

    with closing(sqlite3.connect(sqlite_path(services.settings.store_url))) as conn:
        rows = conn.execute("SELECT actor, action, target, details FROM audit_log ORDER BY id")
        audit = [(a, t, json.loads(d)) for _, a, t, d in rows if a.startswith("segment.")]
    assert [(action, target) for action, target, _ in audit] == [
        ("segment.create", "pros"),
        ("segment.update", "pros"),
        ("segment.delete", "pros"),
        ("segment.create", "pros"),
    ]
    assert audit[1][2]["rule"] == edited["rule"]
    assert audit[1][2]["version"] == second["version"]


async def test_members_are_paginated_with_a_cursor(api: Api, gate: Gate) -> None:
    gate.open = True
    await api.send(*(identify(f"p{i:02}", plan="pro") for i in range(7)))
    response = await api.client.post("/v1/segments", json=PRO, headers=api.admin)
    assert response.status_code == 201
    await api.backfilled("pros", 7)
    everyone = await api.members("pros", limit=100)
    assert len(everyone) == 7 and everyone == sorted(everyone)
    assert await api.members("pros", limit=3) == everyone
    assert await api.members("pros", limit=7) == everyone
    first = (await api.client.get("/v1/segments/pros/members?limit=3", headers=api.server)).json()
    assert len(first["data"]) == 3 and first["next_cursor"] == everyone[2]
    assert all(set(m) == {"profile_id", "entered_at"} for m in first["data"])
    for limit in ("0", "1001", "x", "-1"):
        response = await api.client.get(
            f"/v1/segments/pros/members?limit={limit}", headers=api.server
        )
        assert error_of(response, 400)["code"] == "invalid_request"
    assert error_of(await api.client.get("/v1/segments/nope/members", headers=api.server), 404)


async def test_profiles_show_segments_and_computed_traits(api: Api) -> None:
    await api.send(
        {
            "type": "track",
            "userId": "buyer",
            "event": "Order Completed",
            "properties": {"revenue": 30},
            "messageId": "o1",
        },
        {
            "type": "track",
            "userId": "buyer",
            "event": "Order Completed",
            "properties": {"revenue": 12.5},
            "messageId": "o2",
        },
    )
    profile = await api.profile("user_id:buyer")
    assert profile["computed"] == {"orders_lifetime": 2, "revenue_lifetime": 42.5}
    assert set(profile["segments"]) == {"buyers"}  # from the definitions directory
    listed = await api.client.get("/v1/profiles/user_id:buyer/segments", headers=api.server)
    assert [s["segment"] for s in listed.json()["data"]] == ["buyers"]


async def test_erasure_removes_a_persons_memberships(api: Api, services: Services) -> None:
    await api.send(
        *(
            {"type": "track", "userId": u, "event": "Order Completed", "messageId": f"{u}-o"}
            for u in ("gone", "stays")
        )
    )
    gone = (await api.profile("user_id:gone"))["id"]
    stays = (await api.profile("user_id:stays"))["id"]
    assert sorted(await api.members("buyers")) == sorted([gone, stays])
    response = await api.client.delete("/v1/profiles/user_id:gone", headers=api.admin)
    assert response.status_code == 200, response.text
    assert await api.members("buyers") == [stays]
    assert (await api.segment("buyers"))["size"] == 1


# -- the API: keys, validation, refusals -------------------------------------------------------


async def test_server_keys_read_but_do_not_change_segments(api: Api) -> None:
    server, admin = api.server, api.admin
    assert (await api.client.get("/v1/segments", headers=server)).status_code == 200
    assert (await api.client.get("/v1/segments/buyers", headers=server)).status_code == 200
    assert (await api.client.get("/v1/segments/buyers/members", headers=server)).status_code == 200
    calls = [
        ("POST", "/v1/segments", PRO),
        ("POST", "/v1/segments/validate", PRO),
        ("PUT", "/v1/segments/buyers", {"name": "buyers", "rule": "true"}),
        ("DELETE", "/v1/segments/buyers", None),
    ]
    for method, path, body in calls:
        response = await api.client.request(method, path, json=body, headers=server)
        assert error_of(response, 403)["code"] == "forbidden", (method, path)
        response = await api.client.request(method, path, json=body)
        assert error_of(response, 401)["code"] == "unauthorized", (method, path)
    for path in ("/v1/segments", "/v1/segments/buyers", "/v1/segments/buyers/members"):
        response = await api.client.get(path, headers=basic(api.keys.write))
        assert response.status_code == 401, path
    listed = await api.client.get("/v1/segments", headers=admin)
    assert [s["name"] for s in listed.json()["data"]] == ["buyers"]
    assert (await api.segment("buyers"))["rule"] == "computed.orders_lifetime >= 1"


async def test_validate_answers_what_a_rule_reads(api: Api) -> None:
    response = await api.client.post(
        "/v1/segments/validate",
        json={"name": "lapsing", "rule": "profile.last_seen < now() - days(30) and traits.vip"},
        headers=api.admin,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "valid": True,
        "fields": ["profile.last_seen", "traits.vip"],
        "uses_now": True,
    }
    # validating creates nothing
    listed = await api.client.get("/v1/segments", headers=api.admin)
    assert [s["name"] for s in listed.json()["data"]] == ["buyers"]


INVALID = [
    # (rule, where the error is, words of its reason)
    ("traits.plan ==", "line 1, column 15", "unexpected end"),
    ('traits.plan == "pro" and', "line 1, column 25", "unexpected end"),
    ("traits.plan === 1", "line 1, column", ""),
    ('event.name == "Order Completed"', "line 1, column 1", "event"),
    ('"pro" in segments', "line 1, column", "segments"),
    ('traits.email matches "(unclosed"', "line 1, column", "regular expression"),
    ({"==": [{"var": "traits.plan"}]}, "$", ""),
    ({"and": [True, {"===": [1, 2]}]}, '$.and[1]["==="]', "unknown operator"),
    ({"var": "event.name"}, "$", "event"),
]


@pytest.mark.parametrize(("rule", "location", "reason"), INVALID)
@pytest.mark.parametrize("path", ["/v1/segments", "/v1/segments/validate"])
async def test_an_invalid_rule_is_a_400_with_position_and_reason(
    api: Api, path: str, rule: Any, location: str, reason: str
) -> None:
    response = await api.client.post(path, json={"name": "bad", "rule": rule}, headers=api.admin)
    error = error_of(response, 400)
    assert error["code"] == "invalid_rule"
    [first, *_] = error["details"]
    assert first["location"].startswith(location), first
    assert reason.lower() in (first["message"] + error["message"]).lower()
    assert first["location"] in error["message"]  # the message says where too
    assert error_of(await api.client.get("/v1/segments/bad", headers=api.admin), 404)


CODE_EXECUTION = [
    "traits.__class__",
    "traits.plan.__class__.__mro__",
    "__import__('os')",
    '__import__("os").system("id")',
    "{{7*7}}",
    "{{ config.items() }}",
    '${T(java.lang.Runtime).getRuntime().exec("id")}',
    "#{7*7}",
    'eval("1+1")',
    "exec('import os')",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: 1",
    'traits["__class__"] == 1 or getattr(traits, "x")',
    "open('/etc/passwd')",
    {"eval": ["1+1"]},
    {"__import__": ["os"]},
    {"var": "traits.__class__"},
    {"getattr": [{"var": "traits"}, "__class__"]},
]


@pytest.mark.parametrize("rule", CODE_EXECUTION, ids=str)
async def test_rules_shaped_like_code_execution_are_refused(api: Api, rule: Any) -> None:
    for path in ("/v1/segments/validate", "/v1/segments"):
        response = await api.client.post(
            path, json={"name": "evil", "rule": rule}, headers=api.admin
        )
        error = error_of(response, 400)
        assert error["code"] == "invalid_rule", error
        assert error["details"] and error["details"][0]["location"]
    assert error_of(await api.client.get("/v1/segments/evil", headers=api.admin), 404)


async def test_strings_in_events_are_never_evaluated(api: Api, gate: Gate) -> None:
    gate.open = True
    response = await api.client.post(
        "/v1/segments",
        json={"name": "exact", "rule": 'traits.plan == "{{7*7}}" or traits.plan == "49"'},
        headers=api.admin,
    )
    assert response.status_code == 201
    await api.send(
        identify("t1", plan="{{7*7}}"),
        identify("t2", plan="__import__('os').system('touch /tmp/relevo-pwned')"),
        identify("t3", plan="${7*7}"),
    )
    t1 = (await api.profile("user_id:t1"))["id"]
    await api.backfilled("exact", 1)
    assert await api.members("exact") == [t1]
    assert not Path("/tmp/relevo-pwned").exists()


BAD_DEFINITIONS = [
    (b"{not json", "invalid_request", "JSON"),
    (json.dumps([1, 2]).encode(), "invalid_request", "definition"),
    (json.dumps({"rule": "true"}).encode(), "invalid_request", "name"),
    (json.dumps({"name": "x"}).encode(), "invalid_request", "rule"),
    (json.dumps({"name": "x", "rule": "true", "owner": "me"}).encode(), "invalid_request", "owner"),
    (json.dumps({"name": "Not A Name!", "rule": "true"}).encode(), "invalid_request", "name"),
    (json.dumps({"name": "x" * 65, "rule": "true"}).encode(), "invalid_request", "name"),
]


@pytest.mark.parametrize(("body", "code", "word"), BAD_DEFINITIONS)
async def test_a_bad_definition_is_a_400(api: Api, body: bytes, code: str, word: str) -> None:
    response = await api.client.post("/v1/segments", content=body, headers=api.admin)
    error = error_of(response, 400)
    assert error["code"] == code
    assert word.lower() in json.dumps(error).lower()


async def test_put_and_delete_check_their_target(api: Api) -> None:
    response = await api.client.put("/v1/segments/other", json=PRO, headers=api.admin)
    assert "'pros'" in error_of(response, 400)["message"]
    assert error_of(await api.client.delete("/v1/segments/nope", headers=api.admin), 404)
    assert error_of(await api.client.get("/v1/segments/nope", headers=api.admin), 404)


async def test_a_rule_naming_an_undefined_computed_trait_is_refused(api: Api) -> None:
    for path in ("/v1/segments/validate", "/v1/segments"):
        response = await api.client.post(
            path,
            json={"name": "typo", "rule": "computed.orders_lifetim >= 1 and computed.x > 0"},
            headers=api.admin,
        )
        error = error_of(response, 400)
        assert "unknown computed trait 'orders_lifetim'" in error["message"]
        assert "orders_lifetime" in error["message"]  # what is defined
        assert [d["message"] for d in error["details"]] == [
            "unknown computed trait 'orders_lifetim'",
            "unknown computed trait 'x'",
        ]
    assert error_of(await api.client.get("/v1/segments/typo", headers=api.admin), 404)


async def test_creating_a_segment_that_exists_is_a_conflict(api: Api) -> None:
    first = await api.client.post("/v1/segments", json=PRO, headers=api.admin)
    assert first.status_code == 201, first.text
    again = await api.client.post(
        "/v1/segments", json={**PRO, "rule": 'traits.plan == "x"'}, headers=api.admin
    )
    error_of(again, 409)
    assert "PUT /v1/segments/pros" in again.json()["error"]["message"]
    kept = await api.segment("pros")
    assert kept["rule"] == PRO["rule"]  # the first definition stands
