"""``kill -9`` of a running server: what it acknowledged is durable and counted exactly once.

A 2xx from collect means the events are in the log on disk; the processor commits profile
state and its consumer offsets in one transaction, so a restart replays from the last commit
and applies every event once. The server here applies only a few events per transaction, so
at the moment of the kill it is usually still behind the log.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Node

pytestmark = pytest.mark.slow

E2E_SERVER_ENV = {"RELEVO_PROCESS_BATCH_SIZE": "16"}  # a slow consumer: it lags behind collect

BATCHES = 40
BATCH_SIZE = 100
USERS = 7
EVENT_NAMES = ("Product Viewed", "Product Added", "Checkout Started")


class Stream:
    """``BATCHES`` batches of ``BATCH_SIZE`` tracks, unique messageIds, over a few users."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.users = [f"crash-{run}-user-{n}" for n in range(USERS)]

    def user_of(self, batch: int, index: int) -> str:
        return self.users[(batch * BATCH_SIZE + index) % USERS]

    def message_id(self, batch: int, index: int) -> str:
        return f"crash-{self.run}-{batch}-{index}"

    def batch(self, batch: int) -> dict[str, Any]:
        return {
            "batch": [
                {
                    "type": "track",
                    "messageId": self.message_id(batch, i),
                    "userId": self.user_of(batch, i),
                    "event": EVENT_NAMES[i % len(EVENT_NAMES)],
                    "properties": {"batch": batch, "index": i, "price": 9.99},
                    "timestamp": "2025-01-02T03:04:05.000+00:00",
                }
                for i in range(BATCH_SIZE)
            ],
            "sentAt": "2025-01-02T03:04:05.100+00:00",
        }

    def users_of(self, message_ids: set[str]) -> Counter[str]:
        """How many of ``message_ids`` belong to each user."""
        counts: Counter[str] = Counter()
        for batch in range(BATCHES):
            for i in range(BATCH_SIZE):
                if self.message_id(batch, i) in message_ids:
                    counts[self.user_of(batch, i)] += 1
        return counts

    def ids_of(self, batches: set[int]) -> set[str]:
        return {self.message_id(b, i) for b in batches for i in range(BATCH_SIZE)}


def send(client: httpx.Client, node: Node, body: dict[str, Any]) -> httpx.Response:
    return client.post(
        "/v1/batch", json=body, auth=(node.write_key, ""), headers={"X-Retry-Count": "0"}
    )


def lag_now(node: Node) -> int:
    lag: int = node.http.get("/readyz").json()["processing_lag"]
    return lag


def log_ids_of_run(node: Node, run: str) -> Counter[str]:
    """messageId -> number of rows in the log file, for this test's events only."""
    prefix = f"crash-{run}-"
    return Counter(m for m in node.log_message_ids() if m.startswith(prefix))


def counted(node: Node, user: str) -> int:
    """How many events the user's profile has counted, checked three ways."""
    profile = node.profile(f"user_id:{user}")
    total: int = sum(profile["event_counts"].values())
    assert set(profile["event_counts"]) <= set(EVENT_NAMES), profile["event_counts"]
    assert profile["type_counts"] == {"track": total}
    assert profile["events_applied"] == total
    return total


def test_acknowledged_batches_survive_kill_9_and_count_once(e2e_node: Node, e2e_uid: str) -> None:
    stream = Stream(e2e_uid)

    def deliver(batch: int) -> int | None:
        response = send(e2e_node.http, e2e_node, stream.batch(batch))
        if response.is_success and response.json()["accepted"] == BATCH_SIZE:
            return batch
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        acked = {b for b in pool.map(deliver, range(BATCHES)) if b is not None}
    lag_at_kill = lag_now(e2e_node)
    e2e_node.kill()  # SIGKILL right after the last acknowledgement

    assert acked == set(range(BATCHES)), "a healthy server acknowledges every batch"
    expected_ids = stream.ids_of(acked)

    # on disk, with the server dead: every acknowledged event, once
    in_log = log_ids_of_run(e2e_node, e2e_uid)
    assert set(in_log) == expected_ids
    assert max(in_log.values()) == 1

    e2e_node.start()
    e2e_node.wait_processed(timeout=30)
    expected = stream.users_of(expected_ids)
    assert sum(expected.values()) == BATCHES * BATCH_SIZE
    assert {u: counted(e2e_node, u) for u in stream.users} == dict(expected), (
        f"lag at the kill was {lag_at_kill}"
    )
    # the restart changed nothing on disk either
    assert log_ids_of_run(e2e_node, e2e_uid) == in_log


def test_kill_9_while_sending_counts_acknowledged_events_once_and_retries_dedupe(
    e2e_node: Node, e2e_uid: str
) -> None:
    stream = Stream(e2e_uid)
    acked: set[int] = set()
    failed: set[int] = set()
    enough_acked = threading.Event()

    def sender() -> None:
        with httpx.Client(base_url=e2e_node.url, timeout=10) as client:
            for batch in range(BATCHES):
                try:
                    response = send(client, e2e_node, stream.batch(batch))
                except httpx.TransportError:
                    failed.add(batch)  # the server died under this request, or before it
                    continue
                if response.is_success:
                    acked.add(batch)
                else:
                    failed.add(batch)
                if len(acked) >= BATCHES // 3:
                    enough_acked.set()
        enough_acked.set()

    thread = threading.Thread(target=sender, name="crash-sender")
    thread.start()
    try:
        assert enough_acked.wait(timeout=30), "the sender never got going"
        e2e_node.kill()  # while the sender is still sending
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert acked | failed == set(range(BATCHES))
    assert failed, "the kill came too late to interrupt the stream"

    # on disk, with the server dead: every acknowledged event; nothing twice
    in_log = log_ids_of_run(e2e_node, e2e_uid)
    assert stream.ids_of(acked) <= set(in_log)
    assert max(in_log.values()) == 1
    assert set(in_log) <= stream.ids_of(acked | failed)

    e2e_node.start()
    e2e_node.wait_processed(timeout=30)
    # every event in the log (acknowledged or not) is counted once, and nothing else is
    expected = stream.users_of(set(in_log))
    assert {u: counted(e2e_node, u) for u in stream.users} == {
        u: expected.get(u, 0) for u in stream.users
    }
    acked_per_user = stream.users_of(stream.ids_of(acked))
    assert all(expected[u] >= acked_per_user[u] for u in stream.users)

    # the client retries what was not acknowledged: the parts that did reach the log are
    # recognised as duplicates, so in the end every event is counted exactly once
    for batch in sorted(failed):
        response = send(e2e_node.http, e2e_node, stream.batch(batch))
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["accepted"] + report["duplicates"] == BATCH_SIZE
    e2e_node.wait_processed(timeout=30)
    everything = stream.users_of(stream.ids_of(set(range(BATCHES))))
    assert {u: counted(e2e_node, u) for u in stream.users} == dict(everything)
    assert sum(everything.values()) == BATCHES * BATCH_SIZE
    final_log = log_ids_of_run(e2e_node, e2e_uid)
    assert set(final_log) == stream.ids_of(set(range(BATCHES)))
    assert max(final_log.values()) == 1
