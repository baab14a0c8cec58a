"""The processor over a real SQLite store and embedded log: exactly-once under crashes, poison
events set aside, suppression after erasure, the merge journal, timelines.

Cycles are driven by hand (``load()`` + ``run_once()``) except where the erasure path needs the
processor's own thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import relevo.pipeline.processor as processor_module
import relevo.profiles.state as state_module
from relevo._clock import ManualClock
from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.events.model import decode_event
from relevo.pipeline.processor import Processor
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile
from relevo.services import Services, build_services
from relevo.store.sqlite import SQLiteTransaction
from relevo.store.sqlite_db import sqlite_path
from relevo.testing.calls import identify, track

T0 = datetime(2025, 6, 1, tzinfo=UTC)


class Crash(BaseException):
    """Stands for the process dying: no ``except Exception`` may swallow it."""


@dataclass
class Node:
    """One Relevo node's services on a set of files, restartable like a process."""

    settings: Settings
    clock: ManualClock
    services: Services
    write: str

    @property
    def processor(self) -> Processor:
        return self.services.processor

    async def send(self, *events: dict[str, Any]) -> None:
        body = json.dumps({"batch": list(events)}).encode()
        result = await self.services.collect.collect(
            CollectRequest(body=body, implied_type=None, basic_user=self.write)
        )
        assert not result.rejected, result.rejected
        assert result.accepted == len(events)

    def drain(self) -> int:
        """Run cycles until the log is applied; the number of records consumed."""
        total = 0
        for _ in range(1000):
            consumed = self.processor.run_once()
            if consumed == 0:
                assert self.processor.caught_up()
                return total
            total += consumed
        raise AssertionError("the processor never caught up")

    def restart(self) -> Node:
        """Close everything (as a dying process would lose it) and build anew on the same files."""
        self.services.close()
        self.services = build_services(self.settings, self.clock)
        self.services.log.start()
        self.processor.load()
        return self

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the store file directly, through a connection of its own."""
        with closing(sqlite3.connect(sqlite_path(self.settings.store_url))) as conn:
            return conn.execute(sql, params).fetchall()

    def find(self, id_type: str, value: str) -> Profile | None:
        return self.services.store.find(Identifier(id_type, value))

    def user(self, user_id: str) -> Profile:
        found = self.find("user_id", user_id)
        assert found is not None, f"no profile for user {user_id}"
        return found

    def timeline_ids(self, profile_id: str) -> list[str]:
        return [
            e.message_id
            for e in self.services.store.timeline(profile_id, before=None, limit=100_000)
        ]

    def metric(self, name: str, **labels: str) -> float:
        value = self.services.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def committed_offsets(self) -> dict[int, int]:
        rows = self.rows('SELECT partition, "offset" FROM offsets')
        return {int(partition): int(offset) for partition, offset in rows}


@pytest.fixture
def make_node(
    make_settings: Callable[..., Settings], clock: ManualClock
) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(**overrides: Any) -> Node:
        settings = make_settings(**overrides)
        services = build_services(settings, clock)
        services.log.start()
        node = Node(settings, clock, services, services.keys.create("write").secret)
        node.processor.load()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.services.close()


WORKLOAD = [
    identify("alice", "a0", plan="pro", email="alice@example.com"),
    track("alice", "a1"),
    track("alice", "a2"),
    track("alice", "a3", event="Bought"),
    track("bob", "b1"),
    track("bob", "b2"),
    track(None, "c1", anonymous="carol-device"),
]


def assert_workload_applied_once(node: Node) -> None:
    alice, bob = node.user("alice"), node.user("bob")
    carol = node.find("anonymous_id", "carol-device")
    assert carol is not None
    assert (alice.events_applied, alice.event_counts) == (4, {"Clicked": 2, "Bought": 1})
    assert alice.trait_values() == {"plan": "pro", "email": "alice@example.com"}
    assert sorted(node.timeline_ids(alice.id)) == ["a0", "a1", "a2", "a3"]
    assert (bob.events_applied, bob.event_counts) == (2, {"Clicked": 2})
    assert sorted(node.timeline_ids(bob.id)) == ["b1", "b2"]
    assert carol.events_applied == 1
    assert node.rows("SELECT count(*) FROM timeline") == [(7,)]
    assert node.rows("SELECT count(*) FROM profiles") == [(3,)]
    assert node.rows("SELECT count(*) FROM failed_events") == [(0,)]
    ends = node.services.log.end_offsets()
    assert node.committed_offsets() == {p: end for p, end in ends.items() if end}


# -- exactly once -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "nth"),
    # each crash comes after some of the cycle is already written inside the transaction
    [("link", 1), ("append_timeline", 1), ("save", 1), ("set_offset", 2)],
)
async def test_crash_mid_cycle_commits_nothing_and_replay_is_exact(
    make_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch, where: str, nth: int
) -> None:
    node = make_node()
    await node.send(*WORKLOAD)
    real = getattr(SQLiteTransaction, where)
    calls = 0

    def crashing(self: SQLiteTransaction, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise Crash(where)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SQLiteTransaction, where, crashing)
    with pytest.raises(Crash):
        node.processor.run_once()
    assert calls == nth
    monkeypatch.undo()

    for table in (
        "profiles",
        "identities",
        "timeline",
        "offsets",
        "merge_journal",
        "failed_events",
    ):
        assert node.rows(f"SELECT count(*) FROM {table}") == [(0,)], table

    node.restart()
    assert node.drain() == len(WORKLOAD)
    assert_workload_applied_once(node)
    assert node.metric("relevo_events_processed_total") == len(WORKLOAD)
    # and a restart after the replay applies nothing again
    node.restart()
    assert node.drain() == 0
    assert_workload_applied_once(node)


async def test_crash_in_a_later_cycle_keeps_the_earlier_ones_exactly(
    make_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    # one record per partition per cycle: alice's four events take four cycles
    node = make_node(process_batch_size=1)
    await node.send(*WORKLOAD)
    assert node.processor.run_once() > 0
    after_first = node.user("alice")
    first_offsets = node.committed_offsets()
    assert after_first.events_applied == 1

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("set_offset")

    monkeypatch.setattr(SQLiteTransaction, "set_offset", crash)
    with pytest.raises(Crash):
        node.processor.run_once()
    monkeypatch.undo()
    assert node.user("alice") == after_first
    assert node.committed_offsets() == first_offsets

    node.restart()
    node.drain()
    assert_workload_applied_once(node)


@pytest.mark.parametrize("where", ["save", "set_offset"])
async def test_a_transient_failure_replays_the_cycle_without_double_applying(
    make_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A cycle that fails once (not a poison event) is replayed one event at a time by the
    same processor: whatever it had applied in memory must not count twice."""
    node = make_node()
    await node.send(*WORKLOAD[:4])
    node.drain()  # alice exists, and the processor has seen her
    await node.send(*WORKLOAD[4:], track("alice", "a4"))
    real = getattr(SQLiteTransaction, where)
    failed = False

    def failing_once(self: SQLiteTransaction, *args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            raise sqlite3.OperationalError("database is locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SQLiteTransaction, where, failing_once)
    node.drain()
    assert failed
    alice = node.user("alice")
    assert alice.events_applied == 5
    assert alice.event_counts == {"Clicked": 3, "Bought": 1}
    assert sorted(node.timeline_ids(alice.id)) == ["a0", "a1", "a2", "a3", "a4"]
    assert node.user("bob").events_applied == 2
    assert node.rows("SELECT count(*) FROM failed_events") == [(0,)]
    assert node.metric("relevo_events_failed_total") == 0


# -- poison events ------------------------------------------------------------------------------


async def test_poison_event_is_set_aside_and_the_partition_keeps_flowing(
    make_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node()
    real_apply = state_module.apply_event

    def apply_or_choke(profile: Profile, event: Any) -> None:
        if event.message_id == "poison":
            raise ValueError("cannot digest this event")
        real_apply(profile, event)

    monkeypatch.setattr(processor_module, "apply_event", apply_or_choke)
    await node.send(
        track("alice", "m1"),
        track("alice", "m2"),
        track("alice", "poison"),
        track("alice", "m3"),
        track("bob", "b1"),
        track("alice", "m4"),
    )
    assert node.processor.run_once() == 6
    alice = node.user("alice")
    assert alice.events_applied == 4
    assert sorted(node.timeline_ids(alice.id)) == ["m1", "m2", "m3", "m4"]
    assert node.user("bob").events_applied == 1

    ((partition, offset, error, payload, stream),) = node.rows(
        'SELECT partition, "offset", error, payload, stream FROM failed_events'
    )
    assert decode_event(payload).message_id == "poison"
    assert "ValueError" in error and "cannot digest" in error
    assert stream == node.services.log.name
    (record,) = [r for r in node.services.log.read(partition, offset - 1, 1) if r.offset == offset]
    assert record.payload == payload
    assert node.metric("relevo_events_failed_total") == 1
    assert node.metric("relevo_events_processed_total") == 5
    assert node.processor.lag() == 0

    # later events of the same partition flow; the poison is not retried
    await node.send(track("alice", "m5"))
    assert node.drain() == 1
    assert node.user("alice").events_applied == 5
    node.restart()
    assert node.drain() == 0
    assert node.user("alice").events_applied == 5
    assert node.rows("SELECT count(*) FROM failed_events") == [(1,)]


# -- erasure and suppression --------------------------------------------------------------------


async def test_erased_person_stays_erased_for_late_events_and_restarts(
    make_node: Callable[..., Node], eventually: Callable[..., Any]
) -> None:
    node = make_node()
    node.processor.start()
    await node.send(
        identify("alice", "a0", anonymous="anon-a", email="Alice@Example.com"),
        track("alice", "a1", anonymous="anon-a"),
        track("bob", "b1"),
    )
    await eventually(node.processor.caught_up)
    alice_id = node.user("alice").id

    erasure = await node.services.profiles.erase("user_id:alice", actor="test")
    assert erasure.person.profile_ids == [alice_id]
    assert set(erasure.person.identifiers) == {
        Identifier("user_id", "alice"),
        Identifier("anonymous_id", "anon-a"),
        Identifier("email", "alice@example.com"),
    }
    assert erasure.log_events_erased == 2
    assert node.find("user_id", "alice") is None
    for table, column in (
        ("timeline", "profile_id"),
        ("identities", "profile_id"),
        ("profiles", "id"),
    ):
        assert node.rows(f"SELECT count(*) FROM {table} WHERE {column} = ?", alice_id) == [(0,)]
    assert len(node.rows("SELECT hash FROM suppressions")) == 3

    # late events by any of her identifiers are dropped, not resurrected
    await node.send(
        track("alice", "late-1"),
        track(None, "late-2", anonymous="anon-a"),
        identify(None, "late-3", anonymous="anon-new", email="alice@example.com"),
        track("bob", "b2"),
    )
    await eventually(node.processor.caught_up)
    assert node.metric("relevo_events_suppressed_total") == 3
    for id_type, value in (
        ("user_id", "alice"),
        ("anonymous_id", "anon-a"),
        ("email", "alice@example.com"),
        ("anonymous_id", "anon-new"),
    ):
        assert node.find(id_type, value) is None, (id_type, value)
    assert node.user("bob").events_applied == 2

    # the suppression list is durable: a restarted node still drops her
    node.processor.stop()
    node.restart()
    await node.send(track("alice", "late-4"), identify("alice", "late-5", plan="pro"))
    node.drain()
    assert node.find("user_id", "alice") is None
    assert node.metric("relevo_events_suppressed_total") == 2
    # what she sent before the erasure is gone from the log too
    log = node.services.log
    payloads = [r.payload for p in range(log.partitions) for r in log.read(p, 0, 10_000)]
    ids = {decode_event(p).message_id for p in payloads}
    assert not {"a0", "a1"} & ids
    assert {"b1", "b2"} <= ids


async def test_suppress_directly_on_a_hand_driven_processor(make_node: Callable[..., Node]) -> None:
    """The two halves of erasure without the processor thread: store.erase + suppress."""
    from relevo.profiles.suppression import suppression_hash

    node = make_node()
    await node.send(identify("dave", "d0", anonymous="dave-phone"))
    node.drain()
    dave = node.user("dave")
    identifiers = node.services.store.identifiers(dave.id)
    hashes = [suppression_hash(i) for i in identifiers]
    node.services.store.erase(dave.id, hashes, node.clock.now())
    node.processor.suppress(hashes)
    await node.send(track(None, "d1", anonymous="dave-phone"), track("dave", "d2"))
    node.drain()
    assert node.find("user_id", "dave") is None
    assert node.find("anonymous_id", "dave-phone") is None
    assert node.metric("relevo_events_suppressed_total") == 2


# -- identity: merges, the journal, timelines ---------------------------------------------------


async def test_merge_journal_and_timeline_moves(make_node: Callable[..., Node]) -> None:
    node = make_node(identity_limits={"anonymous_id": 2, "email": 10, "user_id": 1})

    async def step(*events: dict[str, Any]) -> None:
        await node.send(*events)
        node.drain()

    await step(track(None, "j1", anonymous="anon-1"))
    await step(track(None, "j2", anonymous="anon-2"), track(None, "j2b", anonymous="anon-2"))
    p1 = node.find("anonymous_id", "anon-1")
    p2 = node.find("anonymous_id", "anon-2")
    assert p1 is not None and p2 is not None and p1.id != p2.id

    await step(identify("u1", "j3", anonymous="anon-1"))  # login: links, no merge
    assert node.user("u1").id == p1.id
    await step(identify("u1", "j4", anonymous="anon-2"))  # the same user on device 2: merge
    await step(identify("u2", "j5", anonymous="anon-1"))  # another user on device 1: refused
    await step(track("u1", "j6", anonymous="anon-3"))  # a third device: over the limit

    survivor = node.user("u1")
    assert survivor.id == p1.id
    assert survivor.merged_from == [p2.id]
    assert survivor.events_applied == 6
    assert survivor.type_counts == {"track": 4, "identify": 2}
    # the merged profile's timeline moved to the survivor
    assert sorted(node.timeline_ids(p1.id)) == ["j1", "j2", "j2b", "j3", "j4", "j6"]
    assert node.timeline_ids(p2.id) == []
    assert survivor.timeline_size == 6
    u2 = node.user("u2")
    assert u2.id not in (p1.id, p2.id)
    assert node.timeline_ids(u2.id) == ["j5"]

    view = await node.services.profiles.get("user_id:u1")
    journal = [
        (j.outcome, j.survivor, j.other, j.identifier, j.message_id, j.source) for j in view.journal
    ]
    assert journal == [
        ("merged", p1.id, p2.id, "anonymous_id:anon-2", "j4", "default"),
        ("refused", u2.id, p1.id, "anonymous_id:anon-1", "j5", "default"),
        ("refused", p1.id, None, "anonymous_id:anon-3", "j6", "default"),
    ]
    reasons = [j.reason for j in view.journal]
    assert "anonymous_id:anon-2" in reasons[0]
    assert "different user_id" in reasons[1]
    assert "limit 2" in reasons[2]
    assert view.journal[0].at == node.clock.now()  # the event time (no timestamp: receipt)
    assert node.metric("relevo_identity_merges_total", outcome="merged") == 1
    assert node.metric("relevo_identity_merges_total", outcome="refused") == 2
    # a refused identifier stays where it was
    assert node.find("anonymous_id", "anon-1").id == p1.id  # type: ignore[union-attr]
    assert node.find("anonymous_id", "anon-3") is None

    # the merged-away id still answers, with the survivor
    for ref in (p2.id, "anonymous_id:anon-2"):
        assert (await node.services.profiles.get(ref)).profile.id == p1.id
        page = await node.services.profiles.events(ref, None, 50)
        assert sorted(e["messageId"] for e in page.events) == sorted(node.timeline_ids(p1.id))


async def test_merge_of_a_merged_profile_follows_the_chain(make_node: Callable[..., Node]) -> None:
    node = make_node()
    await node.send(track(None, "x1", anonymous="dev-x"))
    node.drain()
    first = node.find("anonymous_id", "dev-x")
    assert first is not None
    await node.send(track(None, "y1", anonymous="dev-y"))
    node.drain()
    await node.send(identify("w", "w1", anonymous="dev-y"))
    node.drain()
    await node.send({"type": "alias", "userId": "w", "previousId": "dev-x", "messageId": "w2"})
    node.drain()
    survivor = node.user("w")
    assert first.id in survivor.merged_from
    assert (await node.services.profiles.get(first.id)).profile.id == survivor.id
    assert sorted(node.timeline_ids(survivor.id)) == ["w1", "w2", "x1", "y1"]


async def test_timeline_is_trimmed_to_the_newest_events(make_node: Callable[..., Node]) -> None:
    node = make_node(timeline_limit=10)
    order = [(i * 7) % 30 for i in range(30)]  # all of 0..29, not in time order
    assert sorted(order) == list(range(30))
    await node.send(*(track("trim", f"t{i:02d}", at=T0 + timedelta(seconds=i)) for i in order))
    node.drain()
    profile = node.user("trim")
    kept = node.timeline_ids(profile.id)
    assert kept == [f"t{i:02d}" for i in range(29, 19, -1)]
    assert profile.timeline_size == 10
    assert profile.events_applied == 30  # counts are not trimmed

    await node.send(track("trim", "t30", at=T0 + timedelta(seconds=30)))
    node.drain()
    assert len(node.timeline_ids(profile.id)) == 11  # within the 10% slack
    await node.send(track("trim", "old", at=T0 - timedelta(days=1)))
    await node.send(track("trim", "t31", at=T0 + timedelta(seconds=31)))
    node.drain()
    kept = node.timeline_ids(profile.id)
    assert kept == [f"t{i:02d}" for i in range(31, 21, -1)]
    assert node.user("trim").timeline_size == 10
    assert node.user("trim").events_applied == 33


async def test_cycles_grow_only_while_catching_up_on_a_backlog(
    make_node: Callable[..., Node],
) -> None:
    node = make_node(partitions=1, process_batch_size=8, catch_up_batch_size=32)

    def cycles() -> list[int]:
        sizes = []
        while consumed := node.processor.run_once():
            sizes.append(consumed)
        return sizes

    # a burst smaller than a catch-up cycle: small cycles, so an event waits for little
    await node.send(*(track(f"burst-{i}", f"b{i}") for i in range(30)))
    assert cycles() == [8, 8, 8, 6]
    # a backlog: each full cycle doubles the next, up to the catch-up size, while at least
    # that much is still waiting; then small cycles again
    await node.send(*(track(f"backlog-{i}", f"k{i}") for i in range(100)))
    assert cycles() == [8, 16, 32, 32, 8, 4]
    assert node.processor.caught_up()
    assert len(node.user("backlog-99").event_counts) == 1
