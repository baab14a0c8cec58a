"""The official server-side SDKs, unmodified, against a real ``relevo serve``.

``segment-analytics-python`` (plain JSON, writeKey in the body and Basic auth) and
``rudder-sdk-python`` (gzip bodies, identify traits in ``context.traits``, no writeKey in the
body) send every call type; the events must land in the right unified profiles, and
anonymous-then-login must stitch into one profile with both histories.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from relevo.config import Settings
from relevo.events.keys import anonymous_key, partition_of, user_key

if TYPE_CHECKING:
    from conftest import Node

pytestmark = pytest.mark.slow

SDKS = {
    "segment": "segment.analytics.client",  # Segment's current Python library
    "rudder": "rudderstack.analytics.client",  # RudderStack's; gzips by default
}

OpenSdk = Callable[..., AbstractContextManager[Any]]
PARTITIONS: int = Settings.model_fields["partitions"].default  # the server runs the default


@pytest.fixture(params=sorted(SDKS))
def sdk(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def open_sdk(sdk: str, e2e_node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenSdk:
    """``open_sdk(sync_mode=False)``: a client of the SDK pointed at the server.

    Leaving the block delivers everything: a batching client flushes and shuts down (joining
    its consumer thread); a sync-mode client has sent each call already and only flushes,
    because ``shutdown()`` raises in sync mode (there are no consumer threads to join).
    Any delivery error the SDK reports through ``on_error`` fails the test.
    """
    # rudder-sdk-python calls dotenv.load_dotenv() on import, which may read ./.env (under a
    # tracer it searches from the working directory): import it from an empty directory
    monkeypatch.chdir(tmp_path)
    client_class = importlib.import_module(SDKS[sdk]).Client

    @contextmanager
    def opened(*, sync_mode: bool = False) -> Iterator[Any]:
        errors: list[Exception] = []
        client = client_class(
            e2e_node.write_key,
            host=e2e_node.url,  # the base URL; the library adds /v1/batch
            on_error=lambda error, batch: errors.append(error),
            sync_mode=sync_mode,
            max_retries=1,
            upload_interval=0.05,
            timeout=10,
        )
        if sdk == "rudder":
            assert client.gzip, "rudder-sdk-python is expected to gzip its bodies by default"
        yield client
        client.flush()
        if not sync_mode:
            client.shutdown()
        assert errors == [], f"the SDK reported delivery errors: {errors}"

    return opened


def identities(profile: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["type"], i["value"]) for i in profile["identities"]}


def test_every_call_type_lands_in_the_right_profile(
    sdk: str, open_sdk: OpenSdk, e2e_node: Node, e2e_uid: str
) -> None:
    user = f"{sdk}-user-{e2e_uid}"
    other = f"{sdk}-other-{e2e_uid}"
    earlier_anon = f"{sdk}-anon-{e2e_uid}"
    group_id = f"{sdk}-group-{e2e_uid}"
    email = f"{e2e_uid}@Example.com"

    # the anonymous visitor the later alias names: seen first, in a request of its own
    with open_sdk() as client:
        client.track(anonymous_id=earlier_anon, event="Signed Up", properties={"via": "ad"})
    e2e_node.wait_processed()

    with open_sdk() as client:  # all of these go out in one batch
        client.identify(user, {"email": email, "plan": "pro"}, context={"ip": "1.2.3.4"})
        client.track(user, "Product Viewed", {"product_id": "sku-1", "price": 9.99})
        client.track(user, "Product Viewed", {"product_id": "sku-2", "price": 5})
        client.page(user, "Docs", "Install", {"url": "http://x/docs"})
        client.screen(user, "App", "Home", {})
        client.group(user, group_id, {"name": "Acme", "employees": 12})
        client.alias(earlier_anon, user)
        client.track(other, "Order Completed", {"revenue": 3})  # someone else, in the same batch
    e2e_node.wait_processed()

    profile = e2e_node.profile(f"user_id:{user}")
    assert profile["traits"]["email"] == email
    assert profile["traits"]["plan"] == "pro"
    assert profile["event_counts"] == {
        "Product Viewed": 2,
        "page:Install": 1,
        "screen:Home": 1,
        "Signed Up": 1,  # the aliased anonymous history joined this profile
    }
    assert profile["type_counts"] == {
        "identify": 1,
        "track": 3,
        "page": 1,
        "screen": 1,
        "group": 1,
        "alias": 1,
    }
    assert profile["events_applied"] == 8
    assert profile["groups"][group_id]["traits"] == {"name": "Acme", "employees": 12}
    assert {
        ("user_id", user),
        ("email", email.lower()),
        ("anonymous_id", earlier_anon),
    } <= identities(profile)
    assert profile["context"]["ip"] == "1.2.3.4"
    assert profile["context"]["library"]["name"] == "analytics-python"

    # every identifier leads to the same person
    for ref in (f"anonymous_id:{earlier_anon}", f"email:{email}", profile["id"]):
        assert e2e_node.profile(ref)["id"] == profile["id"], ref

    # the other user of the batch is a profile of their own, untouched by the first
    someone = e2e_node.profile(f"user_id:{other}")
    assert someone["id"] != profile["id"]
    assert someone["event_counts"] == {"Order Completed": 1}
    assert identities(someone) == {("user_id", other)}


@pytest.mark.parametrize("mode", ["batched", "sync"])
def test_anonymous_then_login_is_one_profile_with_both_histories(
    sdk: str, mode: str, open_sdk: OpenSdk, e2e_node: Node, e2e_uid: str
) -> None:
    anon = f"{sdk}-{mode}-anon-{e2e_uid}"
    user = f"{sdk}-{mode}-user-{e2e_uid}"
    email = f"{sdk}.{mode}.{e2e_uid}@example.com"
    ids = {name: f"{sdk}-{mode}-{name}-{e2e_uid}" for name in ("v1", "v2", "home", "login", "buy")}

    with open_sdk(sync_mode=mode == "sync") as client:
        client.page(
            anonymous_id=anon, name="Home", properties={"path": "/"}, message_id=ids["home"]
        )
        client.track(
            anonymous_id=anon, event="Product Viewed", properties={"sku": 1}, message_id=ids["v1"]
        )
        client.track(
            anonymous_id=anon, event="Product Viewed", properties={"sku": 2}, message_id=ids["v2"]
        )
        client.identify(
            user, {"email": email, "name": "Ada"}, anonymous_id=anon, message_id=ids["login"]
        )
        client.track(user, "Order Completed", {"revenue": 42}, message_id=ids["buy"])
    e2e_node.wait_processed()

    by_user = e2e_node.profile(f"user_id:{user}")
    by_anon = e2e_node.profile(f"anonymous_id:{anon}")
    assert by_user["id"] == by_anon["id"], "login did not stitch the anonymous history"
    assert {("user_id", user), ("anonymous_id", anon), ("email", email)} <= identities(by_user)
    assert by_user["event_counts"] == {"page:Home": 1, "Product Viewed": 2, "Order Completed": 1}
    assert by_user["type_counts"] == {"page": 1, "track": 3, "identify": 1}
    assert by_user["events_applied"] == 5
    assert by_user["traits"]["email"] == email
    assert by_user["traits"]["name"] == "Ada"

    # the timeline of the one profile holds both histories, by either identifier
    for ref in (f"user_id:{user}", f"anonymous_id:{anon}", by_user["id"]):
        timeline = e2e_node.timeline(ref)
        assert sorted(e["messageId"] for e in timeline) == sorted(ids.values()), ref
    stored = {e["messageId"]: e for e in e2e_node.timeline(f"user_id:{user}")}
    assert stored[ids["v1"]]["anonymousId"] == anon
    assert "userId" not in stored[ids["v1"]]  # sent as null by the SDK: stored as absent
    assert stored[ids["buy"]]["userId"] == user
    assert stored[ids["login"]]["traits"]["email"] == email


def ids_applied_in_order(alias_first: bool, prefix: str) -> tuple[str, str]:
    """A user id and an anonymous id whose log partitions are applied in the wanted order.

    The log keeps order per profile key only (``u:<userId>``, else ``a:<anonymousId>``), and a
    processor cycle applies the partitions in turn; so the partitions decide whether an alias
    (keyed by its user id) is applied before or after the anonymous history it names.
    """
    users = (f"{prefix}-user-{n}" for n in range(10_000))
    user = next(u for u in users if 0 < partition_of(user_key(u), PARTITIONS) < PARTITIONS - 1)
    user_partition = partition_of(user_key(user), PARTITIONS)
    for n in range(10_000):
        anon = f"{prefix}-anon-{n}"
        partition = partition_of(anonymous_key(anon), PARTITIONS)
        if (partition > user_partition) if alias_first else (partition < user_partition):
            return user, anon
    raise AssertionError("no anonymous id in the wanted partition")


@pytest.mark.parametrize("applied_first", ["alias", "anonymous history"])
def test_alias_in_one_batch_joins_the_history_it_names_in_either_order(
    sdk: str, applied_first: str, open_sdk: OpenSdk, e2e_node: Node, e2e_uid: str
) -> None:
    user, anon = ids_applied_in_order(applied_first == "alias", f"{sdk}-aliased-{e2e_uid}")

    with open_sdk() as client:  # one batch, in the order the app made the calls
        client.track(anonymous_id=anon, event="Signed Up")
        client.alias(anon, user)
        client.track(anonymous_id=anon, event="Tab Opened")  # the device keeps its anonymous id
        client.track(user, "Order Completed", {"revenue": 1})
    e2e_node.wait_processed()

    profile = e2e_node.profile(f"user_id:{user}")
    assert profile["event_counts"] == {"Signed Up": 1, "Tab Opened": 1, "Order Completed": 1}
    assert profile["type_counts"] == {"track": 3, "alias": 1}
    assert e2e_node.profile(f"anonymous_id:{anon}")["id"] == profile["id"]
    assert len(e2e_node.timeline(f"user_id:{user}")) == 4
