"""Destinations end to end: a real ``relevo serve`` and real HTTP receivers on 127.0.0.1.

Events go in through the collect API; segment changes and subscribed events come out as HTTP
requests that a local receiver records (with the time they arrived), answers as told, or does
not answer at all (its port closed). The receiver is admitted by the operator allowlist
(``RELEVO_OUTBOUND_ALLOW_HOSTS``); the retry backoff is shortened so recoveries are quick.

Proven here: a segment entered reaches a signed webhook that the reference Standard Webhooks
verifier accepts, within a second of the collect 2xx (S14); a receiver down for 30 s loses
nothing and sees the same ``webhook-id`` on every attempt (R10); consent gates a destination
(P2); a slow destination does not hold up a fast one; audience payloads carry only SHA-256
hashes (P4); event subscriptions receive their events and no others.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relevo.channels.signing import sign
from relevo.testing.receiver import Received, WebhookReceiver, always

if TYPE_CHECKING:
    from conftest import Node

pytestmark = pytest.mark.slow

E2E_SERVER_ENV = {
    "RELEVO_OUTBOUND_ALLOW_HOSTS": '["127.0.0.1"]',
    "RELEVO_DELIVERY_RETRY_BASE_SECONDS": "0.5",
    "RELEVO_DELIVERY_RETRY_MAX_SECONDS": "2",
}
OUTAGE_SECONDS = 30.0


# -- helpers ------------------------------------------------------------------------------------


def admin(node: Node) -> dict[str, str]:
    return node.bearer(node.admin_key)


def make_segment(node: Node, uid: str, tier: str = "gold") -> tuple[str, str]:
    """A segment of the profiles whose ``plan`` trait is ``<tier>-<uid>``: (name, plan)."""
    name, plan = f"{tier}-{uid}", f"{tier}-{uid}"
    response = node.http.post(
        "/v1/segments",
        json={"name": name, "rule": f'traits.plan == "{plan}"'},
        headers=admin(node),
    )
    assert response.status_code == 201, response.text
    return name, plan


@contextmanager
def destination(node: Node, **definition: Any) -> Iterator[dict[str, Any]]:
    """A destination for the length of a test (deleted after: its queue goes with it)."""
    response = node.http.post("/v1/destinations", json=definition, headers=admin(node))
    assert response.status_code == 201, response.text
    try:
        yield response.json()
    finally:
        node.http.delete(f"/v1/destinations/{definition['name']}", headers=admin(node))


def identify(node: Node, user_id: str, **extra: Any) -> float:
    """Send an identify; returns the ``time.monotonic()`` of its 2xx."""
    body = {"userId": user_id, "messageId": str(uuid.uuid4()), **extra}
    response = node.post("/v1/identify", body)
    acked = time.monotonic()
    assert response.status_code == 200, response.text
    return acked


def track(node: Node, user_id: str, event: str, **properties: Any) -> float:
    body = {
        "userId": user_id,
        "event": event,
        "properties": properties,
        "messageId": str(uuid.uuid4()),
    }
    response = node.post("/v1/track", body)
    acked = time.monotonic()
    assert response.status_code == 200, response.text
    return acked


def profile_id(node: Node, user_id: str) -> str:
    found: str = node.wait_until(
        lambda: (
            node.get_profile(f"user_id:{user_id}").status_code == 200
            and node.profile(f"user_id:{user_id}")["id"]
        ),
        10,
        f"the profile of {user_id}",
    )
    return found


def verify(secret: str, request: Received) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


def failed_of(node: Node, name: str) -> list[dict[str, Any]]:
    response = node.http.get(
        "/v1/failed-deliveries", params={"destination": name}, headers=admin(node)
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def retried(node: Node, name: str) -> float:
    """``relevo_deliveries_total{destination=name, outcome="retried"}``."""
    sample = f'relevo_deliveries_total{{destination="{name}",outcome="retried"}}'
    text = node.http.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample)
    )


# -- 1. a segment entered, signed, within a second ------------------------------------------------


def test_segment_entered_reaches_a_verified_webhook_within_a_second(
    e2e_node: Node, e2e_uid: str
) -> None:
    node = e2e_node
    with WebhookReceiver() as receiver:
        segment, plan = make_segment(node, e2e_uid)
        with destination(
            node, name=f"hook-{e2e_uid}", type="webhook", url=receiver.url(), segments=[segment]
        ) as created:
            secret = created["secret"]
            assert secret.startswith("whsec_")
            user = f"runner-{e2e_uid}"
            acked = identify(node, user, traits={"plan": plan, "name": "Ada"})
            [request] = receiver.wait_for(lambda seen: seen, 5, "the webhook")
            latency = request.at - acked
            assert latency < 1.0, f"the webhook came {latency:.3f}s after the 2xx"

            payload = verify(secret, request)  # the reference verifier accepts it
            assert payload["type"] == "segment"
            assert payload["event"] == "Segment Entered"
            assert payload["segment"] == segment
            assert payload["profileId"] == profile_id(node, user)
            assert request.headers["content-type"] == "application/json"
            assert request.webhook_id and request.webhook_id.startswith("msg_")
            assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5

            # a tampered body is rejected by the same verifier
            tampered = request.body.replace(segment.encode(), b"someone-else")
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(tampered, request.headers)
            # and so is the same message signed 10 minutes ago (a replay)
            stale = sign(
                secret,
                request.webhook_id,
                datetime.now(UTC) - timedelta(minutes=10),
                request.body,
            )
            with pytest.raises(WebhookVerificationError, match="too old"):
                Webhook(secret).verify(request.body, stale)
            # the membership is on the profile
            assert segment in node.profile(f"user_id:{user}")["segments"]


# -- 2. a receiver down for 30 s ------------------------------------------------------------------


def test_a_receiver_down_for_30s_loses_nothing_and_retries_carry_the_same_id(
    e2e_node: Node, e2e_uid: str
) -> None:
    """15 s answering 503, then 15 s with its port closed, then back: every delivery arrives,
    once, and every attempt of a delivery carries its one webhook-id."""
    node = e2e_node
    receiver = WebhookReceiver(respond=always(503)).start()
    try:
        segment, plan = make_segment(node, e2e_uid)
        name = f"outage-{e2e_uid}"
        with destination(
            node, name=name, type="webhook", url=receiver.url(), segments=[segment]
        ) as created:
            started = time.monotonic()
            early = [f"early-{n}-{e2e_uid}" for n in range(6)]
            late = [f"late-{n}-{e2e_uid}" for n in range(6)]
            for user in early:
                identify(node, user, traits={"plan": plan})
            # each early delivery is tried, refused with 503, and tried again
            receiver.wait_for(
                lambda seen: (
                    len({r.webhook_id for r in seen}) == len(early)
                    and all(
                        sum(r.webhook_id == i for r in seen) >= 2
                        for i in {r.webhook_id for r in seen}
                    )
                ),
                15,
                "every early delivery to be attempted twice",
            )
            time.sleep(max(0.0, started + OUTAGE_SECONDS / 2 - time.monotonic()))
            receiver.go_down()  # now the port is closed: connections are refused
            for user in late:
                identify(node, user, traits={"plan": plan})
            time.sleep(max(0.0, started + OUTAGE_SECONDS - time.monotonic()))
            assert not [r for r in receiver.seen() if r.ok]
            refused_attempts = len(receiver.seen())

            receiver.respond = always(200)
            receiver.come_back()
            back = time.monotonic()
            everyone = early + late
            receiver.wait_for(
                lambda seen: len([r for r in seen if r.ok]) >= len(everyone),
                15,
                "every delivery after the recovery",
            )
            recovered_in = max(r.at for r in receiver.delivered()) - back
            time.sleep(1.0)  # anything sent twice would arrive by now

            seen = receiver.seen()
            delivered = receiver.delivered()
            # all of them arrived, each exactly once
            assert len(delivered) == len(everyone)
            assert len({r.webhook_id for r in delivered}) == len(everyone)
            pids = {profile_id(node, user) for user in everyone}
            assert {r.json()["profileId"] for r in delivered} == pids
            assert {r.json()["segment"] for r in delivered} == {segment}
            # every attempt of a delivery carried the same id (and body), and verifies
            by_body: dict[bytes, set[str | None]] = {}
            by_id: dict[str | None, set[bytes]] = {}
            for request in seen:
                assert request.headers["idempotency-key"] == request.webhook_id
                by_body.setdefault(request.body, set()).add(request.webhook_id)
                by_id.setdefault(request.webhook_id, set()).add(request.body)
                verify(created["secret"], request)
            assert all(len(ids) == 1 for ids in by_body.values())
            assert all(len(bodies) == 1 for bodies in by_id.values())
            early_ids = {r.webhook_id for r in seen[:refused_attempts]}
            assert all(
                sum(r.webhook_id == i for r in seen) >= 3 for i in early_ids
            )  # 503, 503, ..., then 200
            assert failed_of(node, name) == []
            assert recovered_in < 5.0, f"delivered {recovered_in:.1f}s after the recovery"
            # some retries met the closed port: more were scheduled than 503s were answered
            assert retried(node, name) > len([r for r in seen if r.status == 503])
    finally:
        receiver.stop()


# -- 5. consent ---------------------------------------------------------------------------------


def test_a_destination_needing_consent_gets_only_consenting_profiles(
    e2e_node: Node, e2e_uid: str
) -> None:
    node = e2e_node
    with WebhookReceiver() as ads, WebhookReceiver() as canary:
        segment, plan = make_segment(node, e2e_uid)
        with (
            destination(
                node,
                name=f"ads-{e2e_uid}",
                type="webhook",
                url=ads.url(),
                segments=[segment],
                consent=["advertising"],
            ),
            destination(
                node, name=f"canary-{e2e_uid}", type="webhook", url=canary.url(), segments=[segment]
            ),
        ):
            refused = f"refused-{e2e_uid}"
            silent = f"silent-{e2e_uid}"
            other = f"other-{e2e_uid}"
            granted = f"granted-{e2e_uid}"

            def consent(**purposes: bool) -> dict[str, Any]:
                return {"consent": {"categoryPreferences": purposes}}

            identify(node, refused, traits={"plan": plan}, context=consent(advertising=False))
            identify(node, silent, traits={"plan": plan})  # no consent object: denied
            identify(node, other, traits={"plan": plan}, context=consent(analytics=True))
            # the canary (no consent needed) got all three: they were routed
            canary.wait_for(lambda seen: len(seen) == 3, 10, "the canary's three deliveries")
            identify(
                node,
                granted,
                traits={"plan": plan},
                context=consent(advertising=True, analytics=False),
            )
            [request] = ads.wait_for(lambda seen: seen, 10, "the consenting profile")
            time.sleep(0.3)
            assert len(ads.seen()) == 1
            assert request.json()["profileId"] == profile_id(node, granted)
            assert node.profile(f"user_id:{refused}")["consent"]["advertising"]["granted"] is False


# -- 6. isolation -------------------------------------------------------------------------------


def test_a_slow_destination_does_not_delay_a_fast_one(e2e_node: Node, e2e_uid: str) -> None:
    node = e2e_node
    with (
        WebhookReceiver(respond=always(200, delay=3.0)) as slow,
        WebhookReceiver() as fast,
    ):
        segment, plan = make_segment(node, e2e_uid)
        with (
            destination(
                node, name=f"slow-{e2e_uid}", type="webhook", url=slow.url(), segments=[segment]
            ),
            destination(
                node, name=f"fast-{e2e_uid}", type="webhook", url=fast.url(), segments=[segment]
            ),
        ):
            users = [f"iso-{n}-{e2e_uid}" for n in range(20)]
            acked = {user: identify(node, user, traits={"plan": plan}) for user in users}
            fast.wait_for(lambda seen: len(seen) == len(users), 5, "every fast delivery")
            stuck = slow.arrivals
            by_profile = {profile_id(node, user): acked[user] for user in users}
            latencies = [r.at - by_profile[r.json()["profileId"]] for r in fast.seen()]
            assert max(latencies) < 1.0, f"fast deliveries took up to {max(latencies):.3f}s"
            assert len({r.webhook_id for r in fast.seen()}) == len(users)
            # meanwhile the slow one is stuck: its first requests are still being answered,
            # and no more than its in-flight limit were even sent
            assert 1 <= stuck <= 8
            assert slow.seen() == []


# -- 7. audiences -------------------------------------------------------------------------------


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_audience_payloads_and_csv_hold_only_hashes(e2e_node: Node, e2e_uid: str) -> None:
    node = e2e_node
    email = f"Jane.Doe+{e2e_uid}@GMail.com"
    phone = "+1 (415) 555-0123"
    plain = [
        email,
        email.lower(),
        email.strip().lower().split("@")[0],
        "4155550123",
        "14155550123",
        "+14155550123",
        "555-0123",
    ]
    with WebhookReceiver() as google, WebhookReceiver() as meta:
        segment, plan = make_segment(node, e2e_uid)
        with (
            destination(
                node,
                name=f"google-{e2e_uid}",
                type="audience",
                platform="google",
                url=google.url("/google"),
                segments=[segment],
            ),
            destination(
                node,
                name=f"meta-{e2e_uid}",
                type="audience",
                platform="meta",
                url=meta.url("/meta"),
                segments=[segment],
            ),
        ):
            user = f"aud-{e2e_uid}"
            identify(node, user, traits={"plan": plan, "email": email, "phone": phone})
            google.wait_for(lambda seen: len(seen) == 1, 10, "the google add")
            meta.wait_for(lambda seen: len(seen) == 1, 10, "the meta add")
            identify(node, user, traits={"plan": "lapsed"})  # leaves: a remove batch
            google.wait_for(lambda seen: len(seen) == 2, 10, "the google remove")
            meta.wait_for(lambda seen: len(seen) == 2, 10, "the meta remove")

            local = f"janedoe+{e2e_uid}"  # Google drops the dots of a gmail local part
            google_email = sha(f"{local}@gmail.com")
            meta_email = sha(f"jane.doe+{e2e_uid}@gmail.com")
            add, remove = (r.json() for r in google.seen())
            assert add["operation"] == "add" and remove["operation"] == "remove"
            assert add["audience"] == segment
            assert add["body"] == {
                "operations": [
                    {
                        "create": {
                            "userIdentifiers": [
                                {"hashedEmail": google_email},
                                {"hashedPhoneNumber": sha("+14155550123")},
                            ]
                        }
                    }
                ]
            }
            assert (
                remove["body"]["operations"][0]["remove"]["userIdentifiers"]
                == (add["body"]["operations"][0]["create"]["userIdentifiers"])
            )
            meta_add, meta_remove = (r.json() for r in meta.seen())
            assert meta_add["operation"] == "add" and meta_remove["operation"] == "remove"
            assert meta_add["body"] == {
                "payload": {
                    "schema": ["EMAIL", "PHONE"],
                    "data": [[meta_email, sha("14155550123")]],
                }
            }
            for request in [*google.seen(), *meta.seen()]:
                text = request.body.decode() + json.dumps(request.headers)
                for value in plain:
                    assert value.lower() not in text.lower(), f"{value!r} left in plain text"

            # the CSV export of the segment's members: hashed rows only
            other = f"aud2-{e2e_uid}"
            identify(node, other, traits={"plan": plan, "email": f"Zed-{e2e_uid}@Example.org"})
            node.wait_until(
                lambda: len(members(node, segment)) == 1, 10, "the segment to hold one member"
            )
            exported = node.http.get(
                f"/v1/segments/{segment}/audience.csv",
                params={"platform": "meta"},
                headers=admin(node),
            )
            assert exported.status_code == 200, exported.text
            assert exported.headers["content-type"].startswith("text/csv")
            assert exported.text.splitlines() == [
                "email,phone",
                f"{sha(f'zed-{e2e_uid}@example.org')},",
            ]
            assert "example.org" not in exported.text.lower()


def members(node: Node, segment: str) -> list[dict[str, Any]]:
    response = node.http.get(f"/v1/segments/{segment}/members", headers=admin(node))
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


# -- 8. event subscriptions ---------------------------------------------------------------------


def test_a_webhook_subscribed_to_an_event_receives_it_and_nothing_else(
    e2e_node: Node, e2e_uid: str
) -> None:
    node = e2e_node
    with WebhookReceiver() as orders, WebhookReceiver() as canary:  # noqa: SIM117
        with (
            destination(
                node,
                name=f"orders-{e2e_uid}",
                type="webhook",
                url=orders.url(),
                events=["Order Completed"],
            ) as created,
            destination(
                node,
                name=f"everything-{e2e_uid}",
                type="webhook",
                url=canary.url(),
                events=["Product Viewed", "identify", "Order Completed"],
            ),
        ):
            user = f"buyer-{e2e_uid}"

            def mine(seen: list[Received]) -> list[Received]:
                return [r for r in seen if r.json()["event"].get("userId") == user]

            identify(node, user, traits={"plan": "basic"})
            track(node, user, "Product Viewed", sku="shoe-1")
            canary.wait_for(lambda seen: len(mine(seen)) == 2, 10, "the canary's two events")
            acked = track(node, user, "Order Completed", revenue=99.5, currency="EUR")
            [request] = orders.wait_for(mine, 10, "the order webhook")
            assert request.at - acked < 1.0
            time.sleep(0.3)
            assert len(orders.seen()) == 1
            payload = verify(created["secret"], request)
            assert payload["type"] == "event"
            assert payload["profileId"] == profile_id(node, user)
            assert payload["event"]["type"] == "track"
            assert payload["event"]["event"] == "Order Completed"
            assert payload["event"]["properties"] == {"revenue": 99.5, "currency": "EUR"}
