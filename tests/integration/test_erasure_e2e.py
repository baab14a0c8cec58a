"""Erasure: ``DELETE /v1/profiles/{identifier}`` (admin key) removes a person everywhere.

The person here browsed on two devices anonymously, then logged in on both, so their profile
is a merge of two. After the erasure no identifier and no profile id finds them, their events
are gone from the event log file, and their identifiers are suppressed: a replayed old event
(under a new messageId, so dedup cannot catch it) or a new event does not bring them back,
not even after a crash and restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest

from relevo.config import Settings
from relevo.events.keys import anonymous_key, partition_of, user_key

if TYPE_CHECKING:
    from conftest import Node

pytestmark = pytest.mark.slow

SUPPRESSED = "relevo_events_suppressed_total"
PROCESSED = "relevo_events_processed_total"
AT = "2025-05-06T07:08:09.000+00:00"
PARTITIONS: int = Settings.model_fields["partitions"].default  # the server runs the default


@dataclass
class Person:
    user: str
    email: str
    phone_anon: str
    laptop_anon: str
    profile_id: str = ""
    merged_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refs(self) -> list[str]:
        return [
            f"user_id:{self.user}",
            f"email:{self.email}",
            f"anonymous_id:{self.phone_anon}",
            f"anonymous_id:{self.laptop_anon}",
        ]

    @property
    def values(self) -> list[str]:
        return [self.user, self.email, self.phone_anon, self.laptop_anon]

    @property
    def message_ids(self) -> set[str]:
        return {e["messageId"] for e in self.events}


def send(node: Node, person: Person | None, events: list[dict[str, Any]]) -> None:
    for event in events:
        event.setdefault("messageId", f"{event.get('userId') or event['anonymousId']}-{uuid4()}")
        event.setdefault("timestamp", AT)
    response = node.batch(events)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)
    if person is not None:
        person.events.extend(events)
    node.wait_processed()


def create_person(node: Node, uid: str) -> Person:
    """Anonymous on a phone and a laptop, then logged in on both: one profile, two merged."""
    person = Person(
        user=f"erase-user-{uid}",
        email=f"erase.{uid}@example.com",
        phone_anon=f"erase-phone-{uid}",
        laptop_anon=f"erase-laptop-{uid}",
    )
    phone, laptop = person.phone_anon, person.laptop_anon
    send(
        node,
        person,
        [
            {"type": "page", "anonymousId": phone, "name": "Home", "messageId": f"{phone}-p"},
            {"type": "track", "anonymousId": phone, "event": "Product Viewed"},
            {"type": "track", "anonymousId": laptop, "event": "Product Viewed"},
        ],
    )
    laptop_profile = node.profile(f"anonymous_id:{laptop}")["id"]
    send(
        node,
        person,
        [
            {
                "type": "identify",
                "userId": person.user,
                "anonymousId": phone,
                "traits": {"email": person.email, "name": "Erin"},
                "messageId": f"{person.user}-login-phone",
            }
        ],
    )
    send(
        node,
        person,
        [
            {
                "type": "identify",
                "userId": person.user,
                "anonymousId": laptop,
                "messageId": f"{person.user}-login-laptop",
            },
            {"type": "track", "userId": person.user, "event": "Order Completed"},
        ],
    )
    profile = node.profile(f"user_id:{person.user}")
    assert laptop_profile in profile["merged_from"], "the set-up expects a merged profile"
    assert {(i["type"], i["value"]) for i in profile["identities"]} == {
        ("user_id", person.user),
        ("email", person.email),
        ("anonymous_id", phone),
        ("anonymous_id", laptop),
    }
    assert profile["events_applied"] == len(person.events) == 6
    person.profile_id, person.merged_id = profile["id"], laptop_profile
    return person


def mentions(event: dict[str, Any], person: Person) -> bool:
    text = json.dumps(event)
    return event["messageId"] in person.message_ids or any(v in text for v in person.values)


def assert_gone(node: Node, person: Person) -> None:
    for ref in [*person.refs, person.profile_id, person.merged_id]:
        assert node.get_profile(ref).status_code == 404, ref
        assert node.get_events(ref).status_code == 404, ref
        assert node.get_profile(ref, key=node.admin_key).status_code == 404, ref


@pytest.fixture
def person(e2e_node: Node, e2e_uid: str) -> Person:
    return create_person(e2e_node, e2e_uid)


def test_only_an_admin_key_may_erase(e2e_node: Node, person: Person) -> None:
    ref = f"user_id:{person.user}"
    basic_write = {"Authorization": e2e_node.basic_auth(e2e_node.write_key)}
    assert e2e_node.delete_profile(ref, headers={}).status_code == 401
    assert e2e_node.delete_profile(ref, headers=basic_write).status_code == 401
    assert e2e_node.delete_profile(
        ref, headers=e2e_node.bearer(e2e_node.write_key)
    ).status_code in (401, 403)
    assert (
        e2e_node.delete_profile(ref, headers=e2e_node.bearer(e2e_node.server_key)).status_code
        == 403
    )
    assert (
        e2e_node.delete_profile(ref, headers=e2e_node.bearer("rlv_a_not-a-real-key")).status_code
        == 401
    )
    # nothing happened to the person
    assert e2e_node.profile(ref)["id"] == person.profile_id
    assert len(e2e_node.timeline(ref)) == len(person.events)
    assert person.message_ids <= set(e2e_node.log_message_ids())


def test_erasure_removes_the_person_and_replays_do_not_bring_them_back(
    e2e_node: Node, person: Person, e2e_uid: str
) -> None:
    bystander = f"erase-bystander-{e2e_uid}"
    send(e2e_node, None, [{"type": "track", "userId": bystander, "event": "Product Viewed"}])
    old_event = next(e for e in e2e_node.timeline(f"anonymous_id:{person.phone_anon}"))

    response = e2e_node.delete_profile(f"email:{person.email}")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["deleted"] is True
    assert {person.profile_id, person.merged_id} <= set(report["profile_ids"])
    assert report["identifiers_suppressed"] == 4
    assert report["log_events_erased"] == len(person.events)

    assert_gone(e2e_node, person)
    assert e2e_node.delete_profile(f"user_id:{person.user}").status_code == 404
    logged = e2e_node.log_events()
    assert [e["messageId"] for e in logged if mentions(e, person)] == []
    assert any(e.get("userId") == bystander for e in logged), "erasure took someone else's data"
    assert e2e_node.profile(f"user_id:{bystander}")["event_counts"] == {"Product Viewed": 1}

    # late and replayed events: the collector accepts them, the processor drops them
    suppressed_before = e2e_node.metric(SUPPRESSED)
    new_anon = f"erase-new-device-{e2e_uid}"
    replayed = {k: v for k, v in old_event.items() if k not in ("receivedAt", "source")}
    late = [
        {**replayed, "messageId": f"replayed-{e2e_uid}"},  # an old event, a new messageId
        {
            "type": "track",
            "userId": person.user,
            "event": "Came Back",
            "messageId": f"l1-{e2e_uid}",
        },
        {
            "type": "identify",
            "anonymousId": new_anon,  # a new device, but the same person's email
            "traits": {"email": person.email.upper()},
            "messageId": f"l2-{e2e_uid}",
        },
        {
            "type": "track",
            "userId": bystander,
            "event": "Order Completed",
            "messageId": f"b-{e2e_uid}",
        },
    ]
    response = e2e_node.batch(late)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(late)
    e2e_node.wait_processed()
    e2e_node.wait_until(
        lambda: e2e_node.metric(SUPPRESSED) >= suppressed_before + 3,
        what="the late events of the erased person to be suppressed",
    )
    assert e2e_node.metric(SUPPRESSED) == suppressed_before + 3

    assert_gone(e2e_node, person)
    assert e2e_node.get_profile(f"anonymous_id:{new_anon}").status_code == 404
    assert e2e_node.profile(f"user_id:{bystander}")["event_counts"] == {
        "Product Viewed": 1,
        "Order Completed": 1,
    }


def user_in_partition_of(key: str, prefix: str) -> str:
    """A user id whose events share the log partition of ``key``."""
    wanted = partition_of(key, PARTITIONS)
    users = (f"{prefix}-{n}" for n in range(10_000))
    return next(u for u in users if partition_of(user_key(u), PARTITIONS) == wanted)


def test_erasure_holds_across_a_crash_and_later_events_still_flow(
    e2e_node: Node, person: Person, e2e_uid: str
) -> None:
    """The suppression list is durable; and erasing the newest rows of log partitions must not
    make the restarted log hand out offsets the processor has already committed past."""
    # the person's events are the newest in their partitions: the erasure removes the tails
    assert e2e_node.delete_profile(f"user_id:{person.user}").status_code == 200
    e2e_node.kill()
    e2e_node.start()

    suppressed_before = e2e_node.metric(SUPPRESSED)
    processed_before = e2e_node.metric(PROCESSED)
    # new events of others, in the very partitions whose newest rows were erased
    others = [
        user_in_partition_of(key, f"erase-after-{e2e_uid}-{n}")
        for n, key in enumerate(
            [
                user_key(person.user),
                anonymous_key(person.phone_anon),
                anonymous_key(person.laptop_anon),
            ]
        )
    ]
    late = [
        {"type": "track", "userId": person.user, "event": "Came Back"},
        {"type": "track", "anonymousId": person.laptop_anon, "event": "Came Back"},
        *({"type": "track", "userId": other, "event": "Signed Up"} for other in others),
    ]
    for n, event in enumerate(late):
        event["messageId"] = f"after-crash-{e2e_uid}-{n}"
    response = e2e_node.batch(late)
    assert response.status_code == 200, response.text
    e2e_node.wait_until(
        lambda: (
            e2e_node.metric(PROCESSED) + e2e_node.metric(SUPPRESSED)
            >= processed_before + suppressed_before + len(late)
        ),
        timeout=10,
        what="every event sent after the restart to be processed or suppressed",
    )
    assert e2e_node.metric(SUPPRESSED) == suppressed_before + 2
    assert_gone(e2e_node, person)
    for other in others:
        assert e2e_node.profile(f"user_id:{other}")["event_counts"] == {"Signed Up": 1}


def test_erasure_covers_an_id_known_only_as_an_alias(e2e_node: Node, e2e_uid: str) -> None:
    """``alias(previousId=X, userId=U)`` applied before any event of X: the graph knows X only
    as an alias, yet X's anonymous events are the person's, in the log and after erasure."""
    user, aliased = f"erase-alias-user-{e2e_uid}", f"erase-alias-anon-{e2e_uid}"
    send(
        e2e_node,
        None,
        [{"type": "alias", "previousId": aliased, "userId": user, "messageId": f"a-{e2e_uid}"}],
    )
    send(
        e2e_node,
        None,
        [
            {"type": "track", "anonymousId": aliased, "event": "Tab Opened"},
            {"type": "page", "anonymousId": aliased, "name": "Home"},
        ],
    )
    profile = e2e_node.profile(f"user_id:{user}")
    assert profile["event_counts"] == {"Tab Opened": 1, "page:Home": 1}
    assert e2e_node.profile(f"anonymous_id:{aliased}")["id"] == profile["id"]

    response = e2e_node.delete_profile(f"anonymous_id:{aliased}")
    assert response.status_code == 200, response.text
    assert response.json()["log_events_erased"] == 3
    assert [e for e in e2e_node.log_events() if aliased in json.dumps(e)] == []
    for ref in (f"user_id:{user}", f"anonymous_id:{aliased}", f"alias:{aliased}", profile["id"]):
        assert e2e_node.get_profile(ref).status_code == 404, ref

    suppressed_before = e2e_node.metric(SUPPRESSED)
    late = {"type": "track", "anonymousId": aliased, "event": "Came Back"}
    assert e2e_node.batch([{**late, "messageId": f"late-alias-{e2e_uid}"}]).status_code == 200
    e2e_node.wait_processed()
    e2e_node.wait_until(lambda: e2e_node.metric(SUPPRESSED) == suppressed_before + 1)
    assert e2e_node.get_profile(f"anonymous_id:{aliased}").status_code == 404


def test_erasing_a_user_spares_another_user_id_it_aliased(e2e_node: Node, e2e_uid: str) -> None:
    """An alias between two user ids never joins them; so erasing one leaves the other whole."""
    new, old = f"erase-new-user-{e2e_uid}", f"erase-old-user-{e2e_uid}"
    send(
        e2e_node,
        None,
        [{"type": "alias", "previousId": old, "userId": new, "messageId": f"al-{e2e_uid}"}],
    )
    send(e2e_node, None, [{"type": "track", "userId": old, "event": "Order Completed"}])
    old_profile = e2e_node.profile(f"user_id:{old}")
    assert old_profile["id"] != e2e_node.profile(f"user_id:{new}")["id"]

    assert e2e_node.delete_profile(f"user_id:{new}").status_code == 200
    assert e2e_node.profile(f"user_id:{old}") == old_profile
    assert any(e.get("userId") == old for e in e2e_node.log_events())
    send(e2e_node, None, [{"type": "track", "userId": old, "event": "Came Back"}])
    assert e2e_node.profile(f"user_id:{old}")["event_counts"] == {
        "Order Completed": 1,
        "Came Back": 1,
    }
