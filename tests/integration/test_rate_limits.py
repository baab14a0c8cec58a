"""Per-key rate limits: over the limit a key gets 429 with Retry-After, other keys do not;
through Redis the budget is shared by every API node."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from relevo.config import Settings
from relevo.store.redis_ratelimit import RedisLimiter
from relevo.testing.calls import track
from relevo.testing.services import require_server


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(log_sync=False, rate_limit_per_second=5)


async def test_a_key_over_its_rate_gets_429(app_client: httpx.AsyncClient, keys: Any) -> None:
    write = keys.write
    statuses = []
    for i in range(7):
        response = await app_client.post("/v1/track", json=track("u1", f"m{i}"), auth=(write, ""))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"]["code"] == "overloaded"
    assert statuses[:5] == [200] * 5  # a burst of one second's worth
    assert 429 in statuses[5:]
    other = await app_client.post(
        "/v1/decide",
        json={"userId": "u1", "placements": ["nowhere"]},
        headers={"Authorization": f"Bearer {keys.server}"},
    )
    assert other.status_code == 404  # its own budget: limited per key, not per client


async def test_api_nodes_share_a_budget_through_redis() -> None:
    require_server("Redis", "redis://127.0.0.1:6379", 6379)
    prefix = f"relevo:test:{uuid.uuid4().hex}"
    nodes = [RedisLimiter("redis://127.0.0.1:6379/0", 3, prefix) for _ in range(2)]
    try:
        waits = [await nodes[i % 2].wait_time("key_a") for i in range(5)]
        if any(waits[:3]):  # the requests straddled a second boundary: try once more
            waits = [await nodes[i % 2].wait_time("key_b") for i in range(5)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert all(0 < w <= 1 for w in waits[3:])
    finally:
        for node in nodes:
            await node.close()
