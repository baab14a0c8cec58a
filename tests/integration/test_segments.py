"""Streaming segments through the real processor (SQLite store, embedded log, ManualClock).

Cycles are driven by hand (``run_once``) so every step is deterministic: a profile enters a
segment on the event that makes it qualify; only the segments whose inputs changed are
evaluated; membership (with entered-at) is on the profile and in the members table; every
change writes a ``Segment Entered``/``Segment Exited`` outbox row in the same transaction as
the state; sliding windows and ``now()`` rules change membership on time, with no new event;
merges exit the merged-away profile; erasure removes memberships, timers and outbox rows;
definitions come from a YAML directory and a bad file fails the start with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import relevo.pipeline.qualify as qualify_module
import relevo.segments.engine as engine_module
from relevo._clock import ManualClock
from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.errors import ValidationError
from relevo.events.model import Event, decode_event
from relevo.pipeline.processor import Processor
from relevo.profiles import computed
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile
from relevo.profiles.state import apply_event
from relevo.segments.changes import MembershipChange
from relevo.segments.engine import rule_data
from relevo.segments.model import Segment, compile_segment, parse_definition
from relevo.services import Services, build_services
from relevo.store.sqlite import SQLiteTransaction
from relevo.store.sqlite_db import sqlite_path
from relevo.store.timeconv import from_micros
from relevo.testing.calls import identify, track

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # midnight: on every bucket boundary

COMPUTED_TRAITS: list[dict[str, Any]] = [
    {
        "name": "shoe_views_7d",
        "kind": "count",
        "event": "Product Viewed",
        "where": {"category": "running"},
        "window": "7d",
    },
    {
        "name": "revenue_lifetime",
        "kind": "sum",
        "event": "Order Completed",
        "property": "revenue",
    },
    {"name": "days_since_last_order", "kind": "days_since_last", "event": "Order Completed"},
]
SEGMENTS: list[dict[str, Any]] = [
    {"name": "high-intent-runner", "rule": "computed.shoe_views_7d >= 3"},
    {"name": "pro", "rule": 'traits.plan == "pro"'},
    # the JSON form, from a file
    {"name": "big-spender", "rule": {">=": [{"var": "computed.revenue_lifetime"}, 100]}},
    {"name": "lapsed", "rule": "profile.last_seen < now() - days(30)"},
    # a lifetime days_since_last changes with time, with no window
    {"name": "lapsing-buyer", "rule": "computed.days_since_last_order >= 14"},
    # the whole traits map: any trait change can move it
    {"name": "well-described", "rule": "len(traits) >= 3"},
]
EVERY_EVENT = {"lapsed"}  # reads profile facts, which every event moves


def write_definitions(
    directory: Path,
    segments: list[dict[str, Any]] = SEGMENTS,
    traits: list[dict[str, Any]] = COMPUTED_TRAITS,
) -> Path:
    (directory / "segments").mkdir(parents=True, exist_ok=True)
    # one file with a list, and one file per definition
    (directory / "segments" / "first.yaml").write_text(yaml.safe_dump({"segments": segments[:2]}))
    for segment in segments[2:]:
        (directory / "segments" / f"{segment['name']}.yaml").write_text(yaml.safe_dump(segment))
    (directory / "computed_traits.yaml").write_text(yaml.safe_dump({"computed_traits": traits}))
    return directory


class Crash(BaseException):
    """Stands for the process dying: no ``except Exception`` may swallow it."""


@dataclass
class Node:
    """One node's services on a set of files, its processor driven by hand."""

    settings: Settings
    clock: ManualClock
    services: Services
    write: str

    async def send(self, *events: dict[str, Any]) -> None:
        body = json.dumps({"batch": list(events)}).encode()
        result = await self.services.collect.collect(
            CollectRequest(body=body, implied_type=None, basic_user=self.write)
        )
        assert not result.rejected, result.rejected
        assert result.accepted == len(events)

    def drain(self) -> int:
        total = 0
        for _ in range(100):
            consumed = self.services.processor.run_once()
            if consumed == 0:
                assert self.services.processor.caught_up()
                return total
            total += consumed
        raise AssertionError("the processor never caught up")

    async def process(self, *events: dict[str, Any]) -> None:
        await self.send(*events)
        self.drain()

    def restart(self) -> Node:
        self.services.close()
        self.services = build_services(self.settings, self.clock)
        self.services.log.start()
        self.services.processor.load()
        return self

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(sqlite_path(self.settings.store_url))) as conn:
            return conn.execute(sql, params).fetchall()

    def find(self, id_type: str, value: str) -> Profile:
        found = self.services.store.find(Identifier(id_type, value))
        assert found is not None, f"no profile for {id_type}:{value}"
        return found

    def user(self, user_id: str) -> Profile:
        return self.find("user_id", user_id)

    def members(self, segment: str) -> dict[str, datetime]:
        rows = self.rows(
            "SELECT profile_id, entered_at FROM segment_members WHERE segment = ?", segment
        )
        return {pid: from_micros(at) for pid, at in rows}

    def members_of(self, profile_id: str) -> dict[str, datetime]:
        rows = self.rows(
            "SELECT segment, entered_at FROM segment_members WHERE profile_id = ?", profile_id
        )
        return {segment: from_micros(at) for segment, at in rows}

    def outbox(self) -> list[dict[str, Any]]:
        rows = self.rows("SELECT kind, profile_id, payload FROM outbox ORDER BY id")
        found = []
        for kind, profile_id, payload in rows:
            body = json.loads(payload)
            assert kind == "segment" and body["profileId"] == profile_id, (kind, body)
            found.append(body)
        return found

    def changes(self) -> list[tuple[str, str, str]]:
        """(event, segment, profile id) of every outbox row, oldest first."""
        return [(b["event"], b["segment"], b["profileId"]) for b in self.outbox()]

    def timer(self, profile_id: str) -> datetime | None:
        rows = self.rows("SELECT due_at FROM segment_timers WHERE profile_id = ?", profile_id)
        return from_micros(rows[0][0]) if rows else None


@pytest.fixture
def make_node(
    make_settings: Callable[..., Settings], clock: ManualClock, tmp_path: Path
) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(**overrides: Any) -> Node:
        overrides.setdefault("definitions_dir", str(write_definitions(tmp_path / "definitions")))
        overrides.setdefault("log_sync", False)
        settings = make_settings(**overrides)
        services = build_services(settings, clock)
        services.log.start()
        node = Node(settings, clock, services, services.keys.create("write").secret)
        node.services.processor.load()
        nodes.append(node)
        return node

    clock.advance(seconds=(T0 - clock.now()).total_seconds())
    yield make
    for node in nodes:
        node.services.close()


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The names of the segments evaluated, one set per evaluation of one profile."""
    calls: list[set[str]] = []
    real = engine_module.reevaluate

    def spy(
        profile: Profile, segments: list[Segment], data: Any, at: datetime, cause: str
    ) -> list[MembershipChange]:
        segments = list(segments)
        calls.append({s.name for s in segments})
        return real(profile, segments, data, at, cause)

    monkeypatch.setattr(qualify_module, "reevaluate", spy)
    return calls


# -- streaming: entering on the event that qualifies --------------------------------------------


async def test_a_profile_enters_on_the_event_that_makes_it_qualify(
    make_node: Callable[..., Node], clock: ManualClock
) -> None:
    node = make_node()
    await node.process(identify("alice", "a1", plan="free"))
    alice = node.user("alice")
    assert alice.segments == {}
    assert node.changes() == []

    clock.advance(minutes=5)
    entered_at = clock.now()
    await node.process(identify("alice", "a2", plan="pro"))
    alice = node.user("alice")
    assert alice.segments == {"pro": entered_at}
    assert node.members("pro") == {alice.id: entered_at}
    [row] = node.outbox()
    assert row == {
        "type": "segment",
        "event": "Segment Entered",
        "segment": "pro",
        "profileId": alice.id,
        "at": entered_at.isoformat().replace("+00:00", "Z"),
        "cause": "a2",
    }

    # an event that changes nothing the segment reads neither exits nor enters again
    clock.advance(minutes=5)
    await node.process(track("alice", "a3"), identify("alice", "a4", plan="pro"))
    assert node.user("alice").segments == {"pro": entered_at}
    assert len(node.outbox()) == 1

    clock.advance(minutes=5)
    await node.process(identify("alice", "a5", plan="free"))
    assert node.user("alice").segments == {}
    assert node.members("pro") == {}
    assert node.changes() == [
        ("Segment Entered", "pro", alice.id),
        ("Segment Exited", "pro", alice.id),
    ]
    assert node.outbox()[-1]["cause"] == "a5"


async def test_computed_traits_qualify_and_are_shown_on_the_profile(
    make_node: Callable[..., Node], clock: ManualClock
) -> None:
    node = make_node()
    await node.process(
        track("bob", "b1", "Order Completed", revenue=60),
        track("bob", "b2", "Product Viewed", category="running"),
        track("bob", "b3", "Product Viewed", category="tennis"),  # filtered out by `where`
    )
    bob = node.user("bob")
    assert bob.segments == {}
    await node.process(
        track("bob", "b4", "Order Completed", revenue=40.5),
        track("bob", "b5", "Product Viewed", category="running"),
        track("bob", "b6", "Product Viewed", category="running"),
    )
    bob = node.user("bob")
    assert set(bob.segments) == {"big-spender", "high-intent-runner"}
    assert set(node.members("big-spender")) == {bob.id}
    view = await node.services.profiles.get("user_id:bob")
    assert view.computed == {
        "shoe_views_7d": 3,
        "revenue_lifetime": 100.5,
        "days_since_last_order": 0,
    }
    assert view.segments == {"big-spender": clock.now(), "high-intent-runner": clock.now()}
    causes = {(b["segment"], b["cause"]) for b in node.outbox()}
    # entered on the event that crossed the line, inside one cycle of six events
    assert causes == {("big-spender", "b4"), ("high-intent-runner", "b6")}


async def test_only_segments_whose_inputs_changed_are_evaluated(
    make_node: Callable[..., Node], evaluated: list[set[str]]
) -> None:
    node = make_node()
    await node.process(track("carol", "c0", "Clicked"))
    # a new profile: what its event changed, and what reads profile facts or the clock; it is
    # in the other segments if the empty profile is (worked out once: a rule may hold for what
    # a profile lacks)
    assert evaluated == [EVERY_EVENT]

    evaluated.clear()
    await node.process(track("carol", "c1", "Clicked"))  # no trait, no computed trait
    assert evaluated == [EVERY_EVENT]

    evaluated.clear()
    await node.process(identify("carol", "c2", plan="pro"))
    assert evaluated == [EVERY_EVENT | {"pro", "well-described"}]

    evaluated.clear()
    await node.process(identify("carol", "c3", email="c@example.com"))  # not plan
    assert evaluated == [EVERY_EVENT | {"well-described"}]

    evaluated.clear()
    await node.process(track("carol", "c4", "Product Viewed", category="running"))
    assert evaluated == [EVERY_EVENT | {"high-intent-runner"}]

    evaluated.clear()
    await node.process(track("carol", "c5", "Product Viewed", category="tennis"))
    assert evaluated == [EVERY_EVENT]  # the trait's filter did not match: nothing changed

    evaluated.clear()
    await node.process(track("carol", "c6", "Order Completed", revenue=5))
    assert evaluated == [EVERY_EVENT | {"big-spender", "lapsing-buyer"}]


async def test_the_whole_traits_map_is_an_input_too(make_node: Callable[..., Node]) -> None:
    node = make_node()
    await node.process(identify("dan", "d1", plan="free", email="d@example.com"))
    assert "well-described" not in node.user("dan").segments
    await node.process(identify("dan", "d2", city="Oslo"))
    assert "well-described" in node.user("dan").segments


async def test_enter_exit_enter_in_one_cycle_leaves_the_members_table_right(
    make_node: Callable[..., Node], clock: ManualClock
) -> None:
    node = make_node()
    # one batch, one cycle: in, out, in again
    await node.process(
        identify("erin", "e1", plan="pro"),
        identify("erin", "e2", plan="free"),
        identify("erin", "e3", plan="pro"),
    )
    erin = node.user("erin")
    assert erin.segments == {"pro": clock.now()}
    assert node.members("pro") == {erin.id: clock.now()}
    assert [c[0] for c in node.changes()] == [
        "Segment Entered",
        "Segment Exited",
        "Segment Entered",
    ]
    # and the other way: out, in, out
    await node.process(
        identify("erin", "e4", plan="free"),
        identify("erin", "e5", plan="pro"),
        identify("erin", "e6", plan="free"),
    )
    assert node.user("erin").segments == {}
    assert node.members("pro") == {}


@pytest.mark.parametrize("where", ["write_memberships", "append_outbox", "set_timers"])
async def test_a_crash_inside_the_cycle_writes_neither_state_nor_outbox(
    make_node: Callable[..., Node],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    node = make_node()
    await node.send(identify("fay", "f1", plan="pro"))

    def crash(self: SQLiteTransaction, *args: Any, **kwargs: Any) -> None:
        raise Crash(where)

    monkeypatch.setattr(SQLiteTransaction, where, crash)
    with pytest.raises(Crash):
        node.services.processor.run_once()
    monkeypatch.undo()
    for table in ("profiles", "segment_members", "outbox", "segment_timers", "offsets"):
        assert node.rows(f"SELECT count(*) FROM {table}") == [(0,)], table

    node.restart()  # a dying process loses its memory; the log replays
    node.drain()
    fay = node.user("fay")
    assert fay.segments == {"pro": clock.now()}
    assert node.members("pro") == {fay.id: clock.now()}
    assert node.changes() == [("Segment Entered", "pro", fay.id)]
    node.restart()
    assert node.drain() == 0
    assert len(node.outbox()) == 1


# -- time: sliding windows and now() -----------------------------------------------------------


async def test_a_sliding_window_exits_on_time_without_a_new_event(
    make_node: Callable[..., Node], clock: ManualClock
) -> None:
    node = make_node(segment_recheck_seconds=100 * 86400)  # keep `lapsed` out of the way
    await node.process(
        *(
            track("gil", f"g{i}", "Product Viewed", at=T0, category="running", sku="s1")
            for i in range(2)
        )
    )
    clock.advance(days=3)
    await node.process(
        track("gil", "g3", "Product Viewed", at=clock.now(), category="running", sku="s2")
    )
    gil = node.user("gil")
    entered_at = clock.now()
    assert gil.segments == {"high-intent-runner": entered_at}
    # the timer is when the oldest views leave the 7-day window (6-hour buckets)
    due = node.timer(gil.id)
    assert due is not None and T0 + timedelta(days=6, hours=18) <= due <= T0 + timedelta(days=7)

    clock.advance(days=3, hours=17)  # T0 + 6d17h: still three views in the window
    assert node.drain() == 0
    assert node.user("gil").segments == {"high-intent-runner": entered_at}

    clock.advance(seconds=(due - clock.now()).total_seconds())
    assert node.drain() == 0  # no event: the timer alone
    gil = node.user("gil")
    assert gil.segments == {}
    assert node.members("high-intent-runner") == {}
    assert node.changes() == [
        ("Segment Entered", "high-intent-runner", gil.id),
        ("Segment Exited", "high-intent-runner", gil.id),
    ]
    exited = node.outbox()[-1]
    assert exited["cause"] == "schedule"
    assert exited["at"] == due.isoformat().replace("+00:00", "Z")
    view = await node.services.profiles.get("user_id:gil")
    assert view.computed["shoe_views_7d"] == 1
    # the remaining view expires later; the timer moved on to it
    assert node.timer(gil.id) == T0 + timedelta(days=10)


async def test_a_now_rule_enters_and_exits_through_the_recheck(
    make_node: Callable[..., Node], clock: ManualClock
) -> None:
    node = make_node(segment_recheck_seconds=600)
    await node.process(track("hal", "h1", "Clicked", at=T0))
    hal = node.user("hal")
    assert hal.segments == {}
    assert node.timer(hal.id) == T0 + timedelta(seconds=600)

    clock.advance(days=30)  # last seen exactly 30 days ago: not yet lapsed
    assert node.drain() == 0
    assert node.user("hal").segments == {}
    assert node.timer(hal.id) == clock.now() + timedelta(seconds=600)

    clock.advance(seconds=600)
    assert node.drain() == 0
    hal = node.user("hal")
    assert hal.segments == {"lapsed": clock.now()}
    assert node.outbox()[-1]["cause"] == "schedule"

    clock.advance(minutes=1)
    await node.process(track("hal", "h2", "Clicked"))  # back: last_seen is now
    assert node.user("hal").segments == {}
    assert node.changes() == [
        ("Segment Entered", "lapsed", hal.id),
        ("Segment Exited", "lapsed", hal.id),
    ]
    assert node.outbox()[-1]["cause"] == "h2"


async def test_a_lifetime_days_since_last_segment_enters_on_time(
    make_node: Callable[..., Node], clock: ManualClock, tmp_path: Path
) -> None:
    # no now() rule here, so only the trait's own day boundary can wake the profile
    without_now = [s for s in SEGMENTS if s["name"] != "lapsed"]
    node = make_node(
        definitions_dir=str(write_definitions(tmp_path / "no-now", segments=without_now))
    )
    await node.process(track("ivy", "i1", "Order Completed", at=T0, revenue=10))
    ivy = node.user("ivy")
    assert "lapsing-buyer" not in ivy.segments
    assert node.timer(ivy.id) == T0 + timedelta(days=1)

    clock.advance(days=13, hours=23)
    assert node.drain() == 0
    assert "lapsing-buyer" not in node.user("ivy").segments
    clock.advance(hours=1)
    assert node.drain() == 0
    assert node.user("ivy").segments == {"lapsing-buyer": clock.now()}
    assert node.changes() == [("Segment Entered", "lapsing-buyer", ivy.id)]


async def test_the_example_in_the_docs_enters_and_leaves_on_time(
    make_node: Callable[..., Node], clock: ManualClock, tmp_path: Path
) -> None:
    """docs/segments.md's high-intent runner, from its own YAML: 3 running views in 7 days and
    no order; it leaves when the views slide out, with no new event."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "segments.md").read_text()
    segment_yaml, traits_yaml = re.findall(r"```yaml\n(.*?)```", text, re.S)[:2]
    directory = tmp_path / "docs-example"
    (directory / "segments").mkdir(parents=True)
    (directory / "segments" / "high_intent_runner.yaml").write_text(segment_yaml)
    (directory / "computed_traits.yaml").write_text(traits_yaml)
    node = make_node(definitions_dir=str(directory))
    name = yaml.safe_load(segment_yaml)["name"]

    views = [
        track("runner", f"r{i}", "Product Viewed", at=T0, category=category)
        for i, category in enumerate(["running", "tennis", "running"])
    ]
    await node.process(*views)
    assert node.user("runner").segments == {}
    await node.process(track("runner", "r3", "Product Viewed", at=T0, category="running"))
    runner = node.user("runner")
    assert runner.segments == {name: T0}
    await node.process(track("buyer", "b1", "Order Completed"))
    await node.process(
        *(track("buyer", f"b{i}", "Product Viewed", category="running") for i in range(2, 5))
    )
    assert node.user("buyer").segments == {}  # ordered: never a high-intent runner

    clock.advance(days=7)
    assert node.drain() == 0
    assert node.user("runner").segments == {}
    assert node.changes() == [
        ("Segment Entered", name, runner.id),
        ("Segment Exited", name, runner.id),
    ]
    assert node.outbox()[-1]["cause"] == "schedule"


# -- merges and erasure ------------------------------------------------------------------------


async def test_a_merge_exits_the_merged_away_profile_and_reevaluates_the_survivor(
    make_node: Callable[..., Node], clock: ManualClock
) -> None:
    node = make_node()
    await node.process(
        *(
            track(None, f"anon{i}", "Product Viewed", anonymous="dev1", category="running")
            for i in range(3)
        )
    )
    anonymous = node.find("anonymous_id", "dev1")
    assert set(anonymous.segments) == {"high-intent-runner"}
    await node.process(identify("jo", "j1", plan="pro"))
    jo = node.user("jo")
    assert set(jo.segments) == {"pro"}

    clock.advance(minutes=1)
    await node.process(identify("jo", "j2", anonymous="dev1"))
    survivor = node.user("jo")
    assert node.find("anonymous_id", "dev1").id == survivor.id
    merged_away = anonymous.id if survivor.id == jo.id else jo.id
    assert merged_away in survivor.merged_from
    assert set(survivor.segments) == {"pro", "high-intent-runner"}
    assert node.rows("SELECT count(*) FROM segment_members WHERE profile_id = ?", merged_away) == [
        (0,)
    ]
    assert set(node.members("pro")) == {survivor.id}
    assert set(node.members("high-intent-runner")) == {survivor.id}
    merge_rows = [b for b in node.outbox() if b["cause"] in ("merged", "j2")]
    exits = {(b["segment"], b["profileId"]) for b in merge_rows if b["event"] == "Segment Exited"}
    enters = {(b["segment"], b["profileId"]) for b in merge_rows if b["event"] == "Segment Entered"}
    merged_segments = {"high-intent-runner"} if merged_away == anonymous.id else {"pro"}
    assert exits == {(s, merged_away) for s in merged_segments}
    assert enters == {(s, survivor.id) for s in merged_segments}
    assert all(b["cause"] == "merged" for b in merge_rows if b["event"] == "Segment Exited")


async def test_erasure_removes_memberships_timers_and_outbox_rows(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    await node.process(
        identify("kim", "k1", plan="pro"),
        track("kim", "k2", "Product Viewed", category="running"),
        identify("lee", "l1", plan="pro"),
    )
    kim, lee = node.user("kim"), node.user("lee")
    assert set(node.members("pro")) == {kim.id, lee.id}
    assert node.timer(kim.id) is not None
    node.services.processor.start()  # erasure runs on the processor's thread
    try:
        await node.services.profiles.erase("user_id:kim", actor="test")
    finally:
        node.services.processor.stop()
    assert set(node.members("pro")) == {lee.id}
    assert node.timer(kim.id) is None
    assert {b["profileId"] for b in node.outbox()} == {lee.id}
    assert node.rows("SELECT count(*) FROM segment_members WHERE profile_id = ?", kim.id) == [(0,)]


# -- backfill ----------------------------------------------------------------------------------


async def test_a_backfill_makes_progress_under_a_steady_stream_of_events(
    make_node: Callable[..., Node],
    monkeypatch: pytest.MonkeyPatch,
    eventually: Callable[..., Awaitable[None]],
) -> None:
    node = make_node()
    await node.process(*(identify(f"v{i}", f"v{i}", plan="team") for i in range(5)))
    real = Processor.run_once

    def never_idle(self: Processor) -> int:
        return max(1, real(self))  # as if every cycle had applied events

    monkeypatch.setattr(Processor, "run_once", never_idle)
    processor = node.services.processor
    processor.start()
    try:
        await node.services.segments.put({"name": "team", "rule": 'traits.plan == "team"'})
        await eventually(
            lambda: not processor.backfills(), timeout=5, what="the backfill to finish"
        )
    finally:
        processor.stop()
    assert len(node.members("team")) == 5
    assert {b["cause"] for b in node.outbox()} == {"backfill"}


# -- definitions from files --------------------------------------------------------------------


async def test_definitions_are_loaded_from_the_directory_at_start(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    names = {info.definition.name for info in node.services.segments.all()}
    assert names == {s["name"] for s in SEGMENTS}
    assert [d.name for d in node.services.segments.computed_traits] == [
        t["name"] for t in COMPUTED_TRAITS
    ]
    # a restart loads the same files without backfilling what is already backfilled
    node.services.processor.run_backfill()
    while node.services.processor.backfills():
        node.services.processor.run_backfill()
    node.restart()
    assert node.services.processor.backfills() == {}


BAD_FILES = [
    ("segments/bad.yaml", "name: x\nrule: [unclosed\n", "bad.yaml", "not valid YAML"),
    (
        "segments/bad.yaml",
        yaml.safe_dump({"name": "x", "rule": "traits.plan == "}),
        "bad.yaml",
        "line 1, column",
    ),
    (
        "segments/bad.yaml",
        yaml.safe_dump({"name": "x", "rule": "traits.a == 1", "colour": "red"}),
        "bad.yaml",
        "colour",
    ),
    (
        "segments/bad.yaml",
        yaml.safe_dump({"name": "x", "rule": 'event.name == "a"'}),
        "bad.yaml",
        "event",
    ),
    (
        "segments/zz.yaml",
        yaml.safe_dump({"name": "pro", "rule": "traits.a == 1"}),
        "zz.yaml",
        "also defined in",
    ),
    (
        "segments/bad.yaml",
        yaml.safe_dump({"name": "x", "rule": "computed.shoe_views_7 >= 3"}),
        "segments",
        "unknown computed trait 'shoe_views_7'",
    ),
    (
        "computed_traits.yaml",
        yaml.safe_dump({"computed_traits": [{"name": "n", "kind": "median"}]}),
        "computed_traits.yaml",
        "median",
    ),
]


@pytest.mark.parametrize(("path", "text", "named", "reason"), BAD_FILES)
def test_a_bad_definition_file_fails_the_start_with_a_clear_error(
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    tmp_path: Path,
    path: str,
    text: str,
    named: str,
    reason: str,
) -> None:
    directory = write_definitions(tmp_path / "definitions")
    (directory / path).write_text(text)
    settings = make_settings(definitions_dir=str(directory))
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ValidationError) as raised:
        build_services(settings, clock)
    assert named in raised.value.message
    assert reason in str(raised.value.message) + str(raised.value.details)
    # what was opened before the error is closed again: no checkpointer thread is left behind
    assert {t.name for t in threading.enumerate()} <= before


# -- property: incremental membership == from-scratch evaluation --------------------------------

PROPERTY_TRAITS: list[dict[str, Any]] = [
    {
        "name": "views_2d",
        "kind": "count",
        "event": "Product Viewed",
        "where": {"category": "running"},
        "window": "2d",
    },
    {
        "name": "revenue_1d",
        "kind": "sum",
        "event": "Order Completed",
        "property": "revenue",
        "window": "1d",
    },
    {"name": "revenue_life", "kind": "sum", "event": "Order Completed", "property": "revenue"},
    {
        "name": "max_revenue_2d",
        "kind": "max",
        "event": "Order Completed",
        "property": "revenue",
        "window": "2d",
    },
    {"name": "days_since_order", "kind": "days_since_last", "event": "Order Completed"},
    {
        "name": "fav_category_3d",
        "kind": "most_frequent",
        "event": "Product Viewed",
        "property": "category",
        "window": "3d",
    },
    {"name": "last_category", "kind": "last", "event": "Product Viewed", "property": "category"},
    {
        "name": "categories_12h",
        "kind": "distinct_count",
        "event": "Product Viewed",
        "property": "category",
        "window": "12h",
    },
]
PROPERTY_SEGMENTS: list[dict[str, Any]] = [
    {"name": "s-views", "rule": "computed.views_2d >= 2"},
    {"name": "s-rev", "rule": "computed.revenue_1d > 50"},
    {"name": "s-life", "rule": 'computed.revenue_life >= 100 and traits.plan == "pro"'},
    {"name": "s-max", "rule": 'computed.max_revenue_2d >= 40 and not (traits.plan == "free")'},
    {"name": "s-days", "rule": "computed.days_since_order >= 2"},
    {"name": "s-fav", "rule": 'computed.fav_category_3d == "running"'},
    {"name": "s-last", "rule": 'computed.last_category == "tennis" or traits.age >= 40'},
    {"name": "s-cats", "rule": "computed.categories_12h >= 2"},
    {"name": "s-lapsed", "rule": "profile.last_seen < now() - days(1)"},
    {"name": "s-plan", "rule": 'traits.plan in ["pro", "team"]'},
    {"name": "s-traits", "rule": "len(traits) >= 2"},
    {"name": "s-clicks", "rule": 'event_count("Clicked") >= 2'},
    {
        "name": "s-any",
        "rule": {
            "or": [
                {">=": [{"len": [{"var": "computed"}]}, 99]},
                {"is null": [{"var": "traits.plan"}]},
            ]
        },
    },
]
PROPERTY_USERS = ("u0", "u1", "u2")
RECHECK_SECONDS = 3600

property_event = st.fixed_dictionaries(
    {
        "user": st.sampled_from(PROPERTY_USERS),
        # a user's events come as the user, as their device (anonymous), or as both: the
        # first event with both merges the device's profile into the user's
        "who": st.sampled_from(["user", "user", "device", "both"]),
        "kind": st.sampled_from(["identify", "Product Viewed", "Order Completed", "Clicked"]),
        # event time relative to the clock: late by up to 3 days, or a little ahead
        "offset": st.integers(min_value=-3 * 86400, max_value=1800),
        "plan": st.sampled_from([None, "pro", "free", "team"]),
        "age": st.sampled_from([None, 20, 40]),
        "category": st.sampled_from(["running", "tennis", None]),
        "revenue": st.sampled_from([10, 30, 60]),
    }
)
property_steps = st.lists(
    st.tuples(
        st.sampled_from([0, 60, 5 * 3600, 86400 - 1, 86400, 2 * 86400 + 7]),  # clock advance
        st.lists(property_event, min_size=1, max_size=5),
    ),
    min_size=1,
    max_size=6,
)


def property_call(spec: dict[str, Any], message_id: str, now: datetime) -> dict[str, Any]:
    at = now + timedelta(seconds=spec["offset"])
    user = spec["user"] if spec["who"] in ("user", "both") else None
    device = f"device-{spec['user']}" if spec["who"] in ("device", "both") else None
    if spec["kind"] == "identify":
        traits = {k: spec[k] for k in ("plan", "age") if spec[k] is not None}
        call = identify(user, message_id, anonymous=device, **traits)
        call["timestamp"] = at.isoformat()
        return call
    properties: dict[str, Any] = {"revenue": spec["revenue"]}
    if spec["category"] is not None:
        properties["category"] = spec["category"]
    return track(user, message_id, spec["kind"], anonymous=device, at=at, **properties)


@pytest.fixture(scope="module")
def property_definitions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_definitions(
        tmp_path_factory.mktemp("property-definitions"), PROPERTY_SEGMENTS, PROPERTY_TRAITS
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the env is the same for all
)
@given(steps=property_steps, final=st.sampled_from([RECHECK_SECONDS, 86400, 3 * 86400 + 1]))
def test_incremental_membership_equals_a_from_scratch_evaluation(
    no_ambient_config: None,
    property_definitions: Path,
    steps: list[tuple[int, list[dict[str, Any]]]],
    final: int,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            store_url=f"sqlite:///{directory}/relevo.db",
            definitions_dir=str(property_definitions),
            segment_recheck_seconds=RECHECK_SECONDS,
            log_sync=False,
            partitions=2,
        )
        clock = ManualClock(T0)
        services = build_services(settings, clock)
        try:
            services.log.start()
            services.processor.load()
            node = Node(settings, clock, services, services.keys.create("write").secret)
            asyncio.run(_play(node, steps, final))
            _check_against_scratch(node)
        finally:
            services.close()


async def _play(node: Node, steps: list[tuple[int, list[dict[str, Any]]]], final: int) -> None:
    n = 0
    for advance, specs in steps:
        node.clock.advance(seconds=advance)
        calls = []
        for spec in specs:
            n += 1
            calls.append(property_call(spec, f"m{n}", node.clock.now()))
        await node.process(*calls)
    node.clock.advance(seconds=final)
    node.drain()  # the timers that came due, with no event


def _check_against_scratch(node: Node) -> None:
    services, now = node.services, node.clock.now()
    traits = services.segments.computed_traits
    segments = [compile_segment(parse_definition(s)) for s in PROPERTY_SEGMENTS]
    # who each profile is: a user, a device never tied to its user, or both once merged
    histories: dict[tuple[str, str], list[Event]] = {}
    merged: set[str] = set()
    for partition in range(services.log.partitions):
        for record in services.log.read(partition, 0, 100_000):
            event = decode_event(record.payload)
            user = event.user_id or (event.anonymous_id or "").removeprefix("device-")
            side = "user" if event.user_id else "device"
            if event.user_id and event.anonymous_id:
                merged.add(user)
            histories.setdefault((user, side), []).append(event)
    for user in merged:
        histories.setdefault((user, "user"), []).extend(histories.pop((user, "device"), []))

    live_ids: set[str] = set()
    for (user, side), history in histories.items():
        scratch = Profile(id="scratch", created_at=history[0].received_at)
        for event in history:
            apply_event(scratch, event)
            computed.update(traits, scratch, event)
        values = computed.values(traits, scratch, now)
        data = rule_data(scratch, values, now)
        expected = {s.name for s in segments if s.rule.evaluate(data)}
        live = node.user(user) if side == "user" else node.find("anonymous_id", f"device-{user}")
        live_ids.add(live.id)
        assert set(live.segments) == expected, (user, side, values, scratch.trait_values())
        assert computed.values(traits, live, now) == values
        assert all(at <= now for at in live.segments.values())
        assert node.members_of(live.id) == live.segments
    assert len(live_ids) == len(histories)
    # only live profiles are members: a merged-away profile has left everything
    assert {pid for (pid,) in node.rows("SELECT profile_id FROM segment_members")} <= live_ids
    # the outbox tells the same story: per profile and segment, in and out in turn, ending in
    # the profile's membership (none for a merged-away profile)
    state: dict[tuple[str, str], bool] = {}
    for change, segment, profile_id in node.changes():
        entered = change == "Segment Entered"
        assert state.get((segment, profile_id), False) != entered, (segment, profile_id, change)
        state[(segment, profile_id)] = entered
    inside = {(s, pid) for (s, pid), member in state.items() if member}
    members = set(node.rows("SELECT segment, profile_id FROM segment_members"))
    assert inside == members
