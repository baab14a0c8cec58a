"""Retries change nothing: collect deduplicates on ``(source, messageId)`` before the log.

SDKs re-send a batch whenever they did not see the answer (a timeout, a dropped connection),
with the same messageIds and a new ``sentAt``. Five sends must count like one, and the answer
must say which events were duplicates. A messageId reused for a *different* call is still
dropped, but counted as a conflict so an operator can see a client minting bad ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Node

pytestmark = pytest.mark.slow

SENDS = 5
DUPLICATES = "relevo_events_duplicate_total"
CONFLICTS = "relevo_events_duplicate_conflict_total"
PROCESSED = "relevo_events_processed_total"


def a_batch(uid: str) -> tuple[list[dict[str, Any]], str, str]:
    """Twelve calls of every kind for two people."""
    ada, bob = f"idem-ada-{uid}", f"idem-bob-{uid}"
    at = "2025-03-04T05:06:07.000+00:00"
    events: list[dict[str, Any]] = [
        {"type": "identify", "userId": ada, "traits": {"plan": "pro", "logins": 1}},
        {"type": "track", "userId": ada, "event": "Product Viewed", "properties": {"sku": 1}},
        {"type": "track", "userId": ada, "event": "Product Viewed", "properties": {"sku": 2}},
        {"type": "track", "userId": ada, "event": "Order Completed", "properties": {"total": 9}},
        {"type": "page", "userId": ada, "name": "Pricing", "properties": {"path": "/pricing"}},
        {"type": "screen", "userId": ada, "name": "Cart"},
        {"type": "group", "userId": ada, "groupId": f"acme-{uid}", "traits": {"seats": 5}},
        {"type": "track", "anonymousId": f"idem-anon-{uid}", "event": "Ad Clicked"},
        {"type": "alias", "previousId": f"idem-anon-{uid}", "userId": bob},
        {"type": "identify", "userId": bob, "traits": {"plan": "free"}},
        {"type": "track", "userId": bob, "event": "Product Viewed", "properties": {"sku": 3}},
        {"type": "page", "userId": bob, "name": "Home"},
    ]
    for n, event in enumerate(events):
        event.update({"messageId": f"idem-{uid}-{n}", "timestamp": at})
    return events, ada, bob


def sent_at(attempt: int) -> str:
    return f"2025-03-04T05:06:{10 + attempt:02d}.000+00:00"


def test_the_same_batch_sent_five_times_counts_once(e2e_node: Node, e2e_uid: str) -> None:
    events, ada, bob = a_batch(e2e_uid)
    before = e2e_node.metrics()

    reports = []
    for attempt in range(SENDS):
        response = e2e_node.http.post(
            "/v1/batch",
            json={"batch": events, "sentAt": sent_at(attempt), "writeKey": e2e_node.write_key},
            headers={"X-Retry-Count": str(attempt)},  # as analytics-python marks its retries
        )
        assert response.status_code == 200, response.text
        reports.append(response.json())
    assert reports[0]["accepted"] == len(events)
    assert reports[0]["duplicates"] == 0
    for report in reports[1:]:
        assert report["accepted"] == 0
        assert report["duplicates"] == len(events)
    e2e_node.wait_processed()

    after = e2e_node.metrics()
    assert after[PROCESSED] - before.get(PROCESSED, 0) == len(events)
    assert after[DUPLICATES] - before.get(DUPLICATES, 0) == (SENDS - 1) * len(events)
    # a retry differs only in sentAt (and so in the corrected timestamp): not a conflict
    assert after.get(CONFLICTS, 0) == before.get(CONFLICTS, 0)

    profile = e2e_node.profile(f"user_id:{ada}")
    assert profile["event_counts"] == {
        "Product Viewed": 2,
        "Order Completed": 1,
        "page:Pricing": 1,
        "screen:Cart": 1,
    }
    assert profile["type_counts"] == {"identify": 1, "track": 3, "page": 1, "screen": 1, "group": 1}
    assert profile["events_applied"] == 7
    assert profile["traits"]["logins"] == 1
    assert len(e2e_node.timeline(f"user_id:{ada}")) == 7

    other = e2e_node.profile(f"user_id:{bob}")
    assert other["event_counts"] == {"Ad Clicked": 1, "Product Viewed": 1, "page:Home": 1}
    assert other["type_counts"] == {"identify": 1, "track": 2, "alias": 1, "page": 1}
    assert other["events_applied"] == 5
    timeline = e2e_node.timeline(f"user_id:{bob}")
    assert sorted(e["messageId"] for e in timeline) == sorted(e["messageId"] for e in events[7:])


def test_the_same_call_sent_five_times_to_a_single_event_endpoint_counts_once(
    e2e_node: Node, e2e_uid: str
) -> None:
    user = f"idem-single-{e2e_uid}"
    call = {
        "userId": user,
        "event": "Button Clicked",
        "messageId": f"idem-single-{e2e_uid}",
        "timestamp": "2025-03-04T05:06:07.000Z",
    }
    answers = [
        e2e_node.post("/v1/t", {**call, "sentAt": sent_at(attempt)}).json()
        for attempt in range(SENDS)
    ]
    assert [(a["accepted"], a["duplicates"]) for a in answers] == [(1, 0)] + [(0, 1)] * (SENDS - 1)
    e2e_node.wait_processed()
    assert e2e_node.profile(f"user_id:{user}")["event_counts"] == {"Button Clicked": 1}


def test_a_reused_message_id_with_a_different_payload_is_a_counted_conflict(
    e2e_node: Node, e2e_uid: str
) -> None:
    user = f"idem-conflict-{e2e_uid}"
    message_id = f"idem-conflict-{e2e_uid}"
    first = {
        "type": "track",
        "userId": user,
        "event": "Order Completed",
        "messageId": message_id,
        "properties": {"total": 10},
        "timestamp": "2025-03-04T05:06:07.000Z",
    }
    different = {**first, "properties": {"total": 99}}
    before = e2e_node.metrics()

    assert e2e_node.batch([first]).json()["accepted"] == 1
    e2e_node.wait_processed()
    assert e2e_node.metric(CONFLICTS) == before.get(CONFLICTS, 0)

    report = e2e_node.batch([different]).json()
    assert (report["accepted"], report["duplicates"]) == (0, 1)
    assert e2e_node.metric(CONFLICTS) == before.get(CONFLICTS, 0) + 1
    # an exact retry of the first call after that is a duplicate, not another conflict
    assert e2e_node.batch([first]).json()["duplicates"] == 1
    e2e_node.wait_processed()
    after = e2e_node.metrics()
    assert after[CONFLICTS] == before.get(CONFLICTS, 0) + 1
    assert after[DUPLICATES] == before.get(DUPLICATES, 0) + 2

    # the first call stands; the conflicting one never reached the profile
    assert e2e_node.profile(f"user_id:{user}")["event_counts"] == {"Order Completed": 1}
    [stored] = e2e_node.timeline(f"user_id:{user}")
    assert stored["messageId"] == message_id
    assert stored["properties"] == {"total": 10}
    assert e2e_node.log_message_ids().count(message_id) == 1


def test_deduplication_is_per_source(e2e_node: Node, e2e_uid: str) -> None:
    """The same messageId from two sources is two events (dedup is on (source, messageId))."""
    other_source_key = e2e_node.server.create_key("write", source=f"idem-source-{e2e_uid}")
    user = f"idem-sources-{e2e_uid}"
    call = {
        "type": "track",
        "userId": user,
        "event": "Signed In",
        "messageId": f"idem-sources-{e2e_uid}",
    }
    assert e2e_node.batch([call]).json()["accepted"] == 1
    answer = e2e_node.post("/v1/batch", {"batch": [call]}, write_key=other_source_key).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    e2e_node.wait_processed()
    assert e2e_node.profile(f"user_id:{user}")["event_counts"] == {"Signed In": 2}
