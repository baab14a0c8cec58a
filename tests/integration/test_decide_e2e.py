"""The decide endpoint of a real ``relevo serve`` reflects a segment change within a second.

A profile enters a segment through an ``identify``; from the 2xx of that call, decisions are
asked again and again until the segment's offer is served. Every trial must see it within a
second (the processor applies the event, commits, and drops the profile from the decide
cache).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Node

pytestmark = pytest.mark.slow

CATALOG = {
    "placements": [{"id": "hero"}],
    "offers": [
        {"id": "vip", "placements": ["hero"], "priority": 9, "eligibility": '"vips" in segments'},
        {"id": "everyone", "placements": ["hero"]},
    ],
}
E2E_DEFINITIONS = {
    "segments/vips.yaml": {"name": "vips", "rule": 'traits.tier == "vip"'},
    "decisions/catalog.yaml": CATALOG,
}
TRIALS = 20


def served(node: Node, user: str) -> str:
    response = node.http.post(
        "/v1/decide",
        json={"userId": user, "placements": ["hero"]},
        headers=node.bearer(node.server_key),
    )
    assert response.status_code == 200, response.text
    offer: str = response.json()["decisions"][0]["offers"][0]["id"]
    return offer


def test_a_segment_change_reaches_decisions_within_a_second(e2e_node: Node) -> None:
    node = e2e_node
    delays = []
    for _ in range(TRIALS):
        user = uuid.uuid4().hex[:12]
        response = node.post(
            "/v1/identify", {"userId": user, "traits": {"tier": "basic"}, "messageId": user + "a"}
        )
        assert response.status_code == 200
        node.wait_until(lambda u=user: served(node, u) == "everyone", what="the profile")
        response = node.post(
            "/v1/identify", {"userId": user, "traits": {"tier": "vip"}, "messageId": user + "b"}
        )
        assert response.status_code == 200
        acknowledged = time.monotonic()
        node.wait_until(lambda u=user: served(node, u) == "vip", timeout=5, interval=0.005)
        delays.append(time.monotonic() - acknowledged)
    assert max(delays) < 1.0, sorted(delays)
