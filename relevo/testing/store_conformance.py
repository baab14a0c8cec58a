"""The conformance suite every state store backend passes.

Subclass ``StoreConformance`` in a test module (its name starts with ``Test``) and give it a
``store_factory`` fixture: a callable that opens a store on the test's own, empty database,
each call a new store object on that same database (as a second process would open it), all
of them closed by the fixture afterwards. The ``store`` fixture here is the first, migrated.

What a backend promises beyond the ports' signatures, checked here:

- every port round-trips what it is given;
- an identity merge moves identifiers and timeline to the survivor; the merged profile is a
  stub that ``find`` follows (as does an older stub that pointed at it);
- a transaction commits everything (profiles, identities, outbox, consumer offsets ...) or,
  when its block raises, nothing; readers see committed state only;
- two transactions writing the same profile never lose an update. A single-writer store
  (``capabilities.shared_between_processes`` false) runs them one after the other; a shared
  one lets both run and makes the later ``save`` (or ``absorb``) of a profile that changed since
  it was loaded raise ``relevo.errors.Conflict``, without blocking: the caller rolls back and
  runs the unit of work again;
- erasure removes every row of the person and keeps the suppression hashes;
- fan-out numbers outbox entries from its cursor and advances it in the same transaction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from relevo.decisions.log import DecisionRecord, Feedback, FeedbackKind
from relevo.errors import Conflict
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile, Stamped
from relevo.profiles.suppression import suppression_hash
from relevo.segments.changes import MembershipChange
from relevo.store.base import (
    ApiKey,
    Delivery,
    FailedDelivery,
    JournalEntry,
    OutboxEntry,
    OutboxRow,
    Source,
    StateTransaction,
    Store,
    StoredSegment,
    TimelineEntry,
    TransactionConflict,
    VariantCounts,
)
from relevo.store.timeconv import to_micros

StoreFactory = Callable[[], Store]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=365)
WAIT_SECONDS = 0.3  # how long a racing thread waits for the other to reach the same point
THREAD_TIMEOUT = 30.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def user(value: str) -> Identifier:
    return Identifier("user_id", value)


def anonymous(value: str) -> Identifier:
    return Identifier("anonymous_id", value)


def new_profile(profile_id: str, **traits: object) -> Profile:
    return Profile(
        id=profile_id,
        created_at=T0,
        traits={name: Stamped(value, T0, "m0") for name, value in traits.items()},
    )


def create(store: Store, profile_id: str, *identifiers: Identifier, **traits: object) -> Profile:
    """A new profile with its identifiers, committed."""
    profile = new_profile(profile_id, **traits)
    with store.transaction() as tx:
        tx.save([profile])
        tx.link([(i, profile_id, T0) for i in identifiers])
    return profile


def entry(seconds: float, message_id: str, payload: bytes = b"{}") -> TimelineEntry:
    return TimelineEntry(at(seconds), message_id, payload)


def outbox(profile_id: str, seconds: float, payload: bytes = b'{"type":"segment"}') -> OutboxRow:
    return OutboxRow(at(seconds), "segment", profile_id, payload)


def route_to(*destinations: str) -> Callable[[OutboxEntry], list[Delivery]]:
    def route(item: OutboxEntry) -> list[Delivery]:
        return [
            Delivery(
                0, name, f"{name}-{item.id}", item.profile_id, item.payload, 0, item.at, item.at
            )
            for name in destinations
        ]

    return route


def decision(
    decision_id: str,
    seconds: float,
    *,
    placement: str = "home",
    profile_id: str = "p1",
    experiment: str | None = None,
    variant: str | None = None,
) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id,
        at=at(seconds),
        placement=placement,
        profile_id=profile_id,
        policy="priority",
        experiment=experiment,
        variant=variant,
    )


def feedback(decision_id: str, offer: str, kind: FeedbackKind, value: float = 0.0) -> Feedback:
    return Feedback(
        decision_id=decision_id,
        offer=offer,
        kind=kind,
        at=at(5),
        placement="home",
        value=value,
        message_id=f"{decision_id}-{offer}-{kind}",
    )


@dataclass
class _Racer:
    """Runs ``work`` in a thread, again after each ``Conflict``, and keeps what it raised."""

    name: str
    work: Callable[[], None]
    conflicts: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(50):
                try:
                    self.work()
                    return
                except Conflict:
                    self.conflicts += 1
            raise AssertionError(f"{self.name}: still conflicting after 50 attempts")
        except BaseException as exc:  # handed to the test's thread
            self.error = exc


def race(*racers: _Racer) -> None:
    threads = [threading.Thread(target=r.run, name=r.name, daemon=True) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
        assert not thread.is_alive(), f"{thread.name} did not finish (deadlock?)"
    for racer in racers:
        if racer.error is not None:
            raise racer.error


class StoreConformance:
    """The suite; see the module docstring for how a backend's test module uses it."""

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> Store:
        store = store_factory()
        store.migrate()
        return store

    # -- profiles and identities -------------------------------------------------------------

    def test_migrate_is_idempotent(self, store: Store, store_factory: StoreFactory) -> None:
        store.migrate()
        store_factory().migrate()  # another process starting on the same database
        create(store, "p1", user("u1"))
        store.migrate()
        assert store.find("p1") is not None

    def test_profile_round_trip(self, store: Store) -> None:
        profile = create(store, "p1", plan="pro", visits=3)
        assert store.find("p1") == profile
        assert store.find("nobody") is None
        with store.transaction() as tx:
            assert tx.load("p1") == profile
            assert tx.load("nobody") is None
            assert tx.load_many(["p1", "nobody"]) == {"p1": profile}
            assert tx.load_many([]) == {}

    def test_saving_a_loaded_profile_updates_it(self, store: Store) -> None:
        create(store, "p1")
        with store.transaction() as tx:
            loaded = tx.load("p1")
            assert loaded is not None
            loaded.events_applied = 7
            tx.save([loaded])
            again = tx.load("p1")  # its own writes
            assert again is not None and again.events_applied == 7
            again.events_applied = 8
            tx.save([again])  # twice in one transaction
        found = store.find("p1")
        assert found is not None and found.events_applied == 8

    def test_profile_ids_and_count_page_through_live_profiles(self, store: Store) -> None:
        for pid in ("p3", "p1", "p2", "p5", "p4"):
            create(store, pid)
        assert store.profile_count() == 5
        assert store.profile_ids(None, 2) == ["p1", "p2"]
        assert store.profile_ids("p2", 2) == ["p3", "p4"]
        assert store.profile_ids("p4", 2) == ["p5"]
        assert store.profile_ids("p5", 2) == []

    def test_identities_round_trip(self, store: Store) -> None:
        create(store, "p1", user("u1"), anonymous("a1"))
        create(store, "p2", user("u2"))
        assert store.identifiers("p1") == [anonymous("a1"), user("u1")]  # sorted
        assert store.identifiers("nobody") == []
        assert store.find(user("u2")) == store.find("p2")
        assert store.find(user("nobody")) is None
        with store.transaction() as tx:
            assert tx.profile_of(anonymous("a1")) == "p1"
            assert tx.profile_of(anonymous("nobody")) is None
            assert sorted(tx.identifiers_of("p1")) == [anonymous("a1"), user("u1")]
            wanted = [user("u1"), user("u2"), anonymous("a1"), user("nobody")]
            assert tx.owners(wanted) == {user("u1"): "p1", user("u2"): "p2", anonymous("a1"): "p1"}
            assert tx.owners([]) == {}
            tx.link([(user("u3"), "p2", T0)])
            assert tx.profile_of(user("u3")) == "p2"  # its own writes
        assert store.identifiers("p2") == [user("u2"), user("u3")]

    def test_absorb_moves_identifiers_and_timeline_and_leaves_a_stub(self, store: Store) -> None:
        create(store, "p0", user("u0"))
        create(store, "p1", user("u1"))
        create(store, "p2", user("u2"), anonymous("a2"))
        with store.transaction() as tx:
            tx.append_timeline([("p1", entry(1, "m1")), ("p2", entry(2, "m2"))])
            tx.append_timeline([("p0", entry(0, "m0"))])
        with store.transaction() as tx:  # an earlier merge: p0 into p2
            tx.load_many(["p0", "p2"])
            tx.absorb("p2", "p0")
        with store.transaction() as tx:
            survivor, merged = tx.load("p1"), tx.load("p2")
            assert survivor is not None and merged is not None
            survivor.merged_from.append("p2")
            tx.absorb("p1", "p2")
            tx.save([survivor])
            assert tx.load("p2") is None
            assert tx.profile_of(anonymous("a2")) == "p1"
        assert store.identifiers("p1") == [anonymous("a2"), user("u0"), user("u1"), user("u2")]
        assert store.identifiers("p2") == []
        assert [e.message_id for e in store.timeline("p1", before=None, limit=10)] == [
            "m2",
            "m1",
            "m0",
        ]
        assert store.timeline("p2", before=None, limit=10) == []
        survivor_now = store.find("p1")
        assert survivor_now is not None and survivor_now.merged_from == ["p2"]
        assert store.find("p2") == survivor_now  # the stub points at the survivor
        assert store.find("p0") == survivor_now  # so does the older stub
        assert store.find(user("u2")) == survivor_now
        assert store.profile_count() == 1
        assert store.profile_ids(None, 10) == ["p1"]
        with store.transaction() as tx:
            assert tx.load_many(["p0", "p1", "p2"]).keys() == {"p1"}

    def test_journal_round_trip(self, store: Store) -> None:
        merged = JournalEntry(T0, "merged", "p1", "p2", "user_id:u2", "shared", "m1", "web")
        refused = JournalEntry(at(1), "refused", "p3", "p1", "email:x", "unverified", "m2", "web")
        with store.transaction() as tx:
            tx.journal(merged)
            tx.journal(refused)
        assert store.journal_of("p1") == [merged, refused]
        assert store.journal_of("p2") == [merged]
        assert store.journal_of("p9") == []

    # -- timeline ------------------------------------------------------------------------------

    def test_timeline_pages_newest_first_without_gaps_or_repeats(self, store: Store) -> None:
        create(store, "p1")
        entries = [entry(1, "a"), entry(3, "b"), entry(3, "b"), entry(3, "c"), entry(2, "d")]
        with store.transaction() as tx:
            tx.append_timeline([("p1", e) for e in entries])
            tx.append_timeline([("p2", entry(9, "other"))])
        everything = store.timeline("p1", before=None, limit=100)
        assert [(e.at, e.message_id) for e in everything] == [
            (at(3), "c"),
            (at(3), "b"),
            (at(3), "b"),
            (at(2), "d"),
            (at(1), "a"),
        ]
        pages: list[TimelineEntry] = []
        before: tuple[int, str, int] | None = None
        while page := store.timeline("p1", before=before, limit=2):
            pages.extend(page)
            last = page[-1]
            before = (to_micros(last.at), last.message_id, last.seq)
        assert pages == everything
        assert len({e.seq for e in pages}) == 5

    def test_trim_timeline_keeps_the_newest(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.append_timeline([("p1", entry(n, f"m{n}")) for n in range(6)])
        with store.transaction() as tx:
            assert tx.trim_timeline("p1", 4) == 2
            assert tx.trim_timeline("p1", 4) == 0
        kept = store.timeline("p1", before=None, limit=10)
        assert [e.message_id for e in kept] == ["m5", "m4", "m3", "m2"]
        assert kept[0].payload == b"{}"

    # -- transactions --------------------------------------------------------------------------

    def test_a_transaction_that_raises_commits_nothing(self, store: Store) -> None:
        create(store, "p0")
        with store.transaction() as tx:
            tx.set_offset("events", 0, 10)
        with pytest.raises(RuntimeError, match="boom"), store.transaction() as tx:
            changed = tx.load("p0")
            assert changed is not None
            changed.events_applied = 99
            tx.save([changed, new_profile("p1")])
            tx.link([(user("u1"), "p1", T0)])
            tx.append_timeline([("p1", entry(1, "m1"))])
            tx.write_memberships([MembershipChange("p1", "vip", True, T0, "m1")])
            tx.append_outbox([outbox("p1", 1)])
            tx.set_timers({"p1": at(60)})
            tx.record_feedback("p1", feedback("d1", "o1", "click"))
            tx.count_impressions([("offer:o1", None)])
            tx.set_offset("events", 0, 11)
            tx.set_offset("events", 1, 5)
            raise RuntimeError("boom")
        unchanged = store.find("p0")
        assert unchanged is not None and unchanged.events_applied == 0
        assert store.find("p1") is None
        assert store.find(user("u1")) is None
        assert store.timeline("p1", before=None, limit=10) == []
        assert store.memberships("p1") == {}
        assert not store.outbox_pending()
        assert store.next_timer_at() is None
        assert store.feedback_after(0, 10) == []
        assert store.impression_counters(0) == {}
        with store.transaction() as tx:
            assert tx.offsets("events") == {0: 10}

    def test_offsets_commit_with_the_state(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.save([new_profile("p1")])
            tx.set_offset("events", 0, 3)
            tx.set_offset("events", 2, 7)
            tx.set_offset("other", 0, 1)
            tx.record_failure("events", 2, 6, "ValueError('bad')", b"payload", T0)
        with store.transaction() as tx:
            assert tx.offsets("events") == {0: 3, 2: 7}
            assert tx.offsets("other") == {0: 1}
            assert tx.offsets("none") == {}
            tx.set_offset("events", 0, 4)
        with store.transaction() as tx:
            assert tx.offsets("events") == {0: 4, 2: 7}
        assert store.find("p1") is not None

    def test_an_offset_set_against_a_stale_expectation_commits_nothing(self, store: Store) -> None:
        """The fence of partition takeover: a worker that read offset 4 cannot commit once
        another moved it on."""
        with store.transaction() as tx:
            tx.set_offset("events", 0, 4, expected=0)
        with store.transaction() as tx:
            tx.set_offset("events", 0, 9, expected=4)  # the new owner's cycle
        with pytest.raises(TransactionConflict), store.transaction() as tx:
            tx.save([new_profile("stale")])
            tx.set_offset("events", 0, 9, expected=4)  # the old owner's late cycle
        assert store.find("stale") is None
        with store.transaction() as tx:
            assert tx.offsets("events") == {0: 9}

    def test_the_learner_saves_only_from_the_cursor_it_read(self, store: Store) -> None:
        store.save_policies({"a": ("lints", b"1")}, 10, T0, expected=0)
        with pytest.raises(TransactionConflict):
            store.save_policies({"a": ("lints", b"stale")}, 12, T0, expected=5)
        assert store.learner_cursor() == 10
        assert [p.state for p in store.load_policies(["a"])] == [b"1"]

    # -- worker heartbeats and partition leases ------------------------------------------------

    def test_heartbeats_list_the_live_workers(self, store: Store) -> None:
        ttl = timedelta(seconds=5)
        assert store.heartbeat("w1", T0, ttl) == ["w1"]
        assert store.heartbeat("w2", T0 + timedelta(seconds=1), ttl) == ["w1", "w2"]
        # w1 did not come back within its ttl: gone
        assert store.heartbeat("w2", T0 + timedelta(seconds=6), ttl) == ["w2"]

    def test_leases_are_exclusive_until_they_expire(self, store: Store) -> None:
        ttl = timedelta(seconds=5)
        assert store.lease("events", "w1", [0, 1, 2], T0, ttl) == [0, 1, 2]
        # w2 wants 2 and 3: 2 is w1's (and live), 3 is free
        assert store.lease("events", "w2", [2, 3], T0 + timedelta(seconds=1), ttl) == [3]
        # w1 gives 2 up (renewing 0 and 1); now w2 gets it
        assert store.lease("events", "w1", [0, 1], T0 + timedelta(seconds=2), ttl) == [0, 1]
        assert store.lease("events", "w2", [2, 3], T0 + timedelta(seconds=2), ttl) == [2, 3]
        # w1 stops renewing (killed): after its ttl w2 takes 0 and 1 over
        later = T0 + timedelta(seconds=8)
        assert store.lease("events", "w2", [0, 1, 2, 3], later, ttl) == [0, 1, 2, 3]
        assert store.lease("other", "w1", [0], later, ttl) == [0]  # streams are apart

    def test_readers_see_only_committed_state(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.save([new_profile("p1")])
            tx.link([(user("u1"), "p1", T0)])
            assert store.find("p1") is None
            assert store.find(user("u1")) is None
        assert store.find("p1") is not None

    def test_concurrent_writers_lose_no_update(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        """Two workers (two store objects, as two processes) add to one profile at once."""
        create(store, "p1")
        other = store_factory()
        loaded = {"a": threading.Event(), "b": threading.Event()}

        def add_one(me: str, peer: str, on: Store) -> Callable[[], None]:
            def work() -> None:
                with on.transaction() as tx:
                    profile = tx.load("p1")
                    assert profile is not None
                    loaded[me].set()
                    loaded[peer].wait(WAIT_SECONDS)  # both have read it (unless one waits)
                    profile.events_applied += 1
                    tx.save([profile])

            return work

        first, second = _Racer("a", add_one("a", "b", store)), _Racer("b", add_one("b", "a", other))
        race(first, second)
        found = store.find("p1")
        assert found is not None and found.events_applied == 2
        if not store.capabilities.shared_between_processes:
            assert first.conflicts == second.conflicts == 0  # one writer at a time

    def test_an_identifier_linked_by_two_writers_ends_up_with_one(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        other = store_factory()
        looked = {"p1": threading.Event(), "p2": threading.Event()}

        def claim(me: str, peer: str, on: Store) -> Callable[[], None]:
            def work() -> None:
                with on.transaction() as tx:
                    owner = tx.profile_of(user("u1"))
                    looked[me].set()
                    looked[peer].wait(WAIT_SECONDS)
                    if owner is None:
                        tx.save([new_profile(me)])
                        tx.link([(user("u1"), me, T0)])

            return work

        race(_Racer("p1", claim("p1", "p2", store)), _Racer("p2", claim("p2", "p1", other)))
        owner = store.find(user("u1"))
        assert owner is not None
        assert store.profile_ids(None, 10) == [owner.id]
        assert store.identifiers(owner.id) == [user("u1")]

    def test_shared_store_refuses_a_save_over_a_newer_version(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        if not store.capabilities.shared_between_processes:
            pytest.skip("a single-writer store runs transactions one at a time")
        create(store, "p1")
        other = store_factory()
        with pytest.raises(Conflict), store.transaction() as mine:
            stale = mine.load("p1")
            assert stale is not None
            with other.transaction() as theirs:
                fresh = theirs.load("p1")
                assert fresh is not None
                fresh.events_applied = 1
                theirs.save([fresh])
                theirs.set_offset("events", 1, 10)
            stale.events_applied = 100
            mine.set_offset("events", 0, 10)
            mine.save([stale])
        found = store.find("p1")
        assert found is not None and found.events_applied == 1
        with store.transaction() as tx:
            assert tx.offsets("events") == {1: 10}  # the loser's offset was rolled back

    def test_shared_store_refuses_writes_to_a_profile_merged_or_created_meanwhile(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        if not store.capabilities.shared_between_processes:
            pytest.skip("a single-writer store runs transactions one at a time")
        create(store, "p1")
        create(store, "p2")
        other = store_factory()
        with pytest.raises(Conflict), store.transaction() as mine:
            mine_p1, mine_p2 = mine.load("p1"), mine.load("p2")
            assert mine_p1 is not None and mine_p2 is not None
            with other.transaction() as theirs:
                survivor = theirs.load("p1")
                assert survivor is not None and theirs.load("p2") is not None
                theirs.absorb("p1", "p2")
                theirs.save([survivor])
            mine.absorb("p2", "p1")  # the other way round: p1 changed, p2 is a stub by now
            mine.save([mine_p2])
        assert store.find("p2") == store.find("p1")
        with pytest.raises(Conflict), store.transaction() as mine:
            with other.transaction() as theirs:
                theirs.save([new_profile("p3", by="them")])
            mine.save([new_profile("p3", by="me")])
        found = store.find("p3")
        assert found is not None and found.trait_values() == {"by": "them"}

    def test_shared_store_never_commits_a_transaction_that_hit_a_conflict(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        if not store.capabilities.shared_between_processes:
            pytest.skip("a single-writer store runs transactions one at a time")
        create(store, "p1")
        other = store_factory()

        def swallowing(tx: StateTransaction, profile: Profile) -> None:
            with contextlib.suppress(Conflict):  # a careless caller: still no commit
                tx.save([profile])

        with pytest.raises(Conflict), store.transaction() as mine:
            stale = mine.load("p1")
            assert stale is not None
            with other.transaction() as theirs:
                fresh = theirs.load("p1")
                assert fresh is not None
                theirs.save([fresh])
            mine.set_offset("events", 0, 1)
            swallowing(mine, stale)
        with store.transaction() as tx:
            assert tx.offsets("events") == {}

    # -- segments ------------------------------------------------------------------------------

    def test_memberships_round_trip_and_page(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.write_memberships(
                [
                    MembershipChange("p1", "vip", True, at(1), "m1"),
                    MembershipChange("p1", "vip", False, at(2), "m2"),
                    MembershipChange("p1", "vip", True, at(3), "m3"),  # the last one counts
                    MembershipChange("p1", "new", True, at(1), "m1"),
                    MembershipChange("p2", "vip", True, at(4), "m4"),
                    MembershipChange("p3", "vip", True, at(5), "m5"),
                    MembershipChange("p3", "new", False, at(5), "m5"),  # was not in it
                ]
            )
        assert store.memberships("p1") == {"new": at(1), "vip": at(3)}
        assert store.memberships("p3") == {"vip": at(5)}
        assert store.segment_size("vip") == 3
        assert store.segment_members("vip", None, 2) == [("p1", at(3)), ("p2", at(4))]
        assert store.segment_members("vip", "p2", 2) == [("p3", at(5))]
        assert store.segment_members("vip", "p3", 2) == []
        with store.transaction() as tx:
            tx.write_memberships([MembershipChange("p1", "vip", False, at(6), "m6")])
        assert store.memberships("p1") == {"new": at(1)}
        assert store.segment_size("vip") == 2
        assert store.segment_size("none") == 0

    def test_timers(self, store: Store) -> None:
        assert store.next_timer_at() is None
        with store.transaction() as tx:
            tx.set_timers({"p1": at(30), "p2": at(10), "p3": at(20)})
        assert store.next_timer_at() == at(10)
        with store.transaction() as tx:
            assert tx.due_timers(at(25), 10) == ["p2", "p3"]
            assert tx.due_timers(at(25), 1) == ["p2"]
            tx.set_timers({"p2": None, "p3": at(40)})
        with store.transaction() as tx:
            assert tx.due_timers(at(100), 10) == ["p1", "p3"]
        assert store.next_timer_at() == at(30)

    def test_segment_backfill_bookkeeping(self, store: Store) -> None:
        segment = StoredSegment("vip", b'{"name":"vip"}', "v1", None)
        store.put_segment(segment, T0)
        assert store.list_segments() == [segment]
        store.mark_backfilled("vip", "v0")  # an older version's backfill: ignored
        assert store.list_segments()[0].backfilled_version is None
        store.mark_backfilled("vip", "v1")
        assert store.list_segments() == [StoredSegment("vip", b'{"name":"vip"}', "v1", "v1")]
        store.put_segment(StoredSegment("vip", b'{"name":"vip","v":2}', "v2", None), at(1))
        # a new version keeps the old mark, so the backfill it needs shows
        assert store.list_segments() == [StoredSegment("vip", b'{"name":"vip","v":2}', "v2", "v1")]
        store.put_segment(StoredSegment("all", b"{}", "v1", None), T0)
        assert [s.name for s in store.list_segments()] == ["all", "vip"]
        with store.transaction() as tx:
            tx.write_memberships([MembershipChange("p1", "vip", True, T0, "m1")])
        assert store.delete_segment("vip")
        assert not store.delete_segment("vip")
        assert store.segment_size("vip") == 0
        assert [s.name for s in store.list_segments()] == ["all"]

    # -- keys, sources, audit ----------------------------------------------------------------

    def test_keys_round_trip(self, store: Store) -> None:
        write = ApiKey("k1", "write", "web", T0, None)
        admin = ApiKey("k2", "admin", None, at(1), None)
        store.create_key(write, "hash1")
        store.create_key(admin, "hash2")
        assert store.key_by_hash("hash1") == write
        assert store.key_by_hash("nope") is None
        assert store.list_keys() == [write, admin]
        assert store.revoke_key("k1", at(2))
        assert not store.revoke_key("k1", at(3))
        assert not store.revoke_key("nope", at(3))
        assert store.key_by_hash("hash1") == ApiKey("k1", "write", "web", T0, at(2))

    def test_sources_and_audit(self, store: Store) -> None:
        store.upsert_source(Source("web", ["https://a.example"]))
        store.upsert_source(Source("app", []))
        store.upsert_source(Source("web", ["https://a.example", "https://b.example"]))
        assert store.get_source("web") == Source("web", ["https://a.example", "https://b.example"])
        assert store.get_source("nope") is None
        assert store.list_sources() == [
            Source("app", []),
            Source("web", ["https://a.example", "https://b.example"]),
        ]
        store.audit(T0, "admin:k2", "key.create", "k1", {"kind": "write", "odd": "a\x00b\n"})
        store.audit(T0, "admin:k2", "key.revoke", "k1", None)

    # -- destinations, outbox, deliveries ----------------------------------------------------

    def test_destinations_round_trip(self, store: Store) -> None:
        store.put_destination("hook", b'{"url":"https://a.example"}', T0)
        store.put_destination("ads", b"{}", T0)
        store.put_destination("hook", b'{"url":"https://b.example"}', at(1))
        assert store.list_destinations() == [
            ("ads", b"{}"),
            ("hook", b'{"url":"https://b.example"}'),
        ]
        with store.transaction() as tx:
            tx.append_outbox([outbox("p1", 1)])
        store.fan_out(0, 10, route_to("hook", "ads"))
        assert store.delete_destination("hook")
        assert not store.delete_destination("hook")
        assert store.list_destinations() == [("ads", b"{}")]
        assert store.due_deliveries("hook", LATER, 10) == []  # its queue went with it
        assert len(store.due_deliveries("ads", LATER, 10)) == 1

    def test_fan_out_numbers_entries_and_advances_its_cursor_atomically(self, store: Store) -> None:
        assert not store.outbox_pending()
        assert store.fan_out(0, 10, route_to("hook")) == 0
        with store.transaction() as tx:
            tx.append_outbox([outbox("p1", 1, b"1"), outbox("p2", 2, b"2")])
            tx.append_outbox([outbox("p1", 3, b"3")])
        assert store.outbox_pending()
        assert store.outbox_cursor() == 0

        def broken(item: OutboxEntry) -> list[Delivery]:
            raise RuntimeError("routing failed")

        with pytest.raises(RuntimeError, match="routing failed"):
            store.fan_out(0, 10, broken)
        assert store.outbox_cursor() == 0
        assert store.outbox_pending()
        seen: list[OutboxEntry] = []

        def route(item: OutboxEntry) -> list[Delivery]:
            seen.append(item)
            return route_to("hook")(item)

        assert store.fan_out(0, 2, route) == 2
        assert [(e.id, e.profile_id, e.payload, e.at, e.kind) for e in seen] == [
            (1, "p1", b"1", at(1), "segment"),
            (2, "p2", b"2", at(2), "segment"),
        ]
        assert store.outbox_cursor() == 2
        assert store.fan_out(0, 10, route) == 1
        assert seen[-1].id == 3 and seen[-1].payload == b"3"
        assert store.outbox_cursor() == 3
        assert not store.outbox_pending()
        due = store.due_deliveries("hook", LATER, 10)
        assert [(d.webhook_id, d.payload, d.attempts) for d in due] == [
            ("hook-1", b"1", 0),
            ("hook-2", b"2", 0),
            ("hook-3", b"3", 0),
        ]
        with store.transaction() as tx:  # drained: numbering carries on, ids never repeat
            tx.append_outbox([outbox("p1", 4, b"4")])
        assert store.fan_out(0, 10, route) == 1
        assert seen[-1].id == 4
        with store.transaction() as tx:
            tx.append_outbox([outbox("p1", 5, b"5")])
        assert store.fan_out(10, 10, lambda item: []) == 1  # a floor above the cursor
        assert store.outbox_cursor() == 11
        assert not store.outbox_pending()

    def test_delivery_lifecycle(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.append_outbox([outbox("p1", 1, b"1"), outbox("p2", 2, b"2")])
        store.fan_out(0, 10, route_to("hook"))
        first, second = store.due_deliveries("hook", LATER, 10)
        assert (first.first_at, first.next_at, first.last_error) == (at(1), at(1), None)
        assert store.due_deliveries("hook", at(1), 10) == [first]
        assert store.due_deliveries("hook", at(0), 10) == []
        assert store.due_deliveries("hook", LATER, 1) == [first]
        store.reschedule(first.id, 1, at(100), "503")
        assert store.due_deliveries("hook", at(50), 10) == [second]
        retried = store.due_deliveries("hook", at(100), 10)[1]
        assert (retried.id, retried.attempts, retried.next_at, retried.last_error) == (
            first.id,
            1,
            at(100),
            "503",
        )
        store.delivered(second.id)
        assert store.due_deliveries("hook", LATER, 10) == [retried]
        store.fail(retried, 2, "410 gone", at(101))
        assert store.due_deliveries("hook", LATER, 10) == []
        [failed] = store.failed_deliveries(None, 0, 10)
        assert (failed.destination, failed.webhook_id, failed.profile_id) == (
            "hook",
            "hook-1",
            "p1",
        )
        assert (failed.payload, failed.attempts, failed.reason) == (b"1", 2, "410 gone")
        assert failed.failed_at == at(101)

    def test_failed_deliveries_page_and_replay_with_their_webhook_ids(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.append_outbox([outbox("p1", n) for n in range(3)])
        store.fan_out(0, 10, route_to("hook", "ads"))
        for item in store.due_deliveries("hook", LATER, 10) + store.due_deliveries(
            "ads", LATER, 10
        ):
            store.fail(item, 5, "budget spent", at(50))
        everything = store.failed_deliveries(None, 0, 100)
        assert len(everything) == 6
        assert [f.id for f in everything] == sorted(f.id for f in everything)
        pages: list[FailedDelivery] = []
        after = 0
        while page := store.failed_deliveries("hook", after, 2):
            pages.extend(page)
            after = page[-1].id
        assert [f.webhook_id for f in pages] == ["hook-1", "hook-2", "hook-3"]
        assert store.replay_failed([pages[0].id, pages[2].id, pages[0].id], at(60)) == 2
        assert [f.webhook_id for f in store.failed_deliveries("hook", 0, 10)] == ["hook-2"]
        replayed = store.due_deliveries("hook", at(60), 10)
        assert [(d.webhook_id, d.attempts, d.first_at) for d in replayed] == [
            ("hook-1", 0, at(60)),
            ("hook-3", 0, at(60)),
        ]
        assert store.replay_failed([], at(60)) == 0

    # -- decisions -----------------------------------------------------------------------------

    def test_catalog_round_trip(self, store: Store) -> None:
        assert store.catalog_stamp() == (0, None)
        store.put_catalog_item("offer", "b", b'{"id":"b"}', T0)
        store.put_catalog_item("offer", "a", b'{"id":"a"}', T0)
        store.put_catalog_item("placement", "home", b"{}", T0)
        before = store.catalog_stamp()
        assert before[0] == 3
        assert store.catalog_items() == [
            ("offer", "a", b'{"id":"a"}'),
            ("offer", "b", b'{"id":"b"}'),
            ("placement", "home", b"{}"),
        ]
        store.put_catalog_item("offer", "a", b'{"id":"a","v":2}', at(1))
        assert store.catalog_stamp() != before
        assert store.catalog_items()[0] == ("offer", "a", b'{"id":"a","v":2}')
        assert store.delete_catalog_item("offer", "b")
        assert not store.delete_catalog_item("offer", "b")
        assert store.catalog_stamp()[0] == 2

    def test_decision_log_and_feedback(self, store: Store) -> None:
        d1 = decision("d1", 1, experiment="exp", variant="a")
        d2 = decision("d2", 2, experiment="exp", variant="b")
        d3 = decision("d3", 3)
        elsewhere = decision("d4", 2, placement="cart")
        store.append_decisions([d1, d2])
        store.append_decisions([d3, elsewhere, decision("d1", 9, placement="dup")])  # d1 kept
        assert store.decision_records(["d1", "d3", "nope"]) == {"d1": d1, "d3": d3}
        assert store.decision_records([]) == {}
        with store.transaction() as tx:
            assert tx.record_feedback("p1", feedback("d1", "o1", "impression"))
            assert tx.record_feedback("p1", feedback("d1", "o1", "click"))
            assert not tx.record_feedback("p1", feedback("d1", "o1", "click"))  # a repeat
        with store.transaction() as tx:
            assert not tx.record_feedback("p1", feedback("d1", "o1", "impression"))
            assert tx.record_feedback("p1", feedback("d2", "o2", "conversion", 9.5))
        logged = list(store.logged("home"))
        assert [entry.record for entry in logged] == [d1, d2, d3]
        assert (logged[0].impressions, logged[0].clicks, logged[0].conversions) == (
            frozenset({"o1"}),
            frozenset({"o1"}),
            frozenset(),
        )
        assert logged[1].conversions == frozenset({"o2"})
        assert [e.record.id for e in store.logged("home", since=at(2))] == ["d2", "d3"]
        assert [e.record.id for e in store.logged("home", until=at(3))] == ["d1", "d2"]
        assert store.variant_counts("exp", "home") == [
            VariantCounts("a", 1, 1, 1, 0, 0.0),
            VariantCounts("b", 1, 0, 0, 1, 9.5),
        ]
        assert store.variant_counts(None, "home") == [
            VariantCounts("", 1, 0, 0, 0, 0.0),
            VariantCounts("a", 1, 1, 1, 0, 0.0),
            VariantCounts("b", 1, 0, 0, 1, 9.5),
        ]
        after = store.feedback_after(0, 10)
        assert [(f.decision_id, f.kind) for _, f in after] == [
            ("d1", "impression"),
            ("d1", "click"),
            ("d2", "conversion"),
        ]
        seqs = [seq for seq, _ in after]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert after[2][1] == feedback("d2", "o2", "conversion", 9.5)
        assert store.feedback_after(seqs[0], 1) == [after[1]]
        assert store.feedback_after(seqs[2], 10) == []
        assert sorted(store.feedback_of(["d1"]), key=lambda f: f[0]) == after[:2]
        assert store.feedback_of([]) == []

    def test_feedback_is_read_in_commit_order(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        """The learner's cursor must never pass feedback that commits later."""
        if not store.capabilities.shared_between_processes:
            pytest.skip("a single-writer store commits in the order it writes")
        other = store_factory()
        with store.transaction() as slow:
            slow.record_feedback("p1", feedback("d1", "o1", "click"))  # written first...
            with other.transaction() as fast:
                fast.record_feedback("p2", feedback("d2", "o2", "click"))
            seen = store.feedback_after(0, 10)
            assert [f.decision_id for _, f in seen] == ["d2"]
            cursor = seen[-1][0]
        # ...committed last: still past the cursor
        assert [f.decision_id for _, f in store.feedback_after(cursor, 10)] == ["d1"]

    def test_impression_counters(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.count_impressions([("offer:a", None), ("offer:a@3600", 3600)])
            tx.count_impressions([("offer:a", None), ("offer:a@7200", 7200)])
        assert store.impression_counters(0) == {
            "offer:a": 2,
            "offer:a@3600": 1,
            "offer:a@7200": 1,
        }
        assert store.impression_counters(7200) == {"offer:a": 2, "offer:a@7200": 1}
        assert store.prune_counters(7200) == 1
        assert store.impression_counters(0) == {"offer:a": 2, "offer:a@7200": 1}

    def test_policies_and_the_learner_cursor(self, store: Store) -> None:
        assert store.policies() == {}
        assert store.learner_cursor() == 0
        store.save_policies({"home": ("lints", b"s1"), "cart": ("eps", b"c1")}, 5, T0)
        assert store.policies() == {"home": 1, "cart": 1}
        assert store.learner_cursor() == 5
        store.save_policies({"home": ("lints", b"s2")}, 9, at(1))
        assert store.policies() == {"home": 2, "cart": 1}
        assert store.learner_cursor() == 9
        [home] = store.load_policies(["home"])
        assert (home.name, home.algorithm, home.state, home.version) == ("home", "lints", b"s2", 2)
        assert sorted(p.name for p in store.load_policies()) == ["cart", "home"]
        assert store.load_policies([]) == []

    # -- erasure ---------------------------------------------------------------------------------

    def test_erasure_removes_the_person_everywhere_and_keeps_suppressions(
        self, store: Store
    ) -> None:
        create(store, "p1", user("u1"), anonymous("a1"))
        create(store, "stub", anonymous("a2"))
        create(store, "keep", user("u9"))
        with store.transaction() as tx:
            tx.load_many(["p1", "stub"])
            tx.absorb("p1", "stub")
            tx.journal(JournalEntry(T0, "merged", "p1", "stub", "anonymous_id:a2", "x", "m", "s"))
            tx.journal(JournalEntry(T0, "refused", "keep", None, "user_id:u9", "x", "m", "s"))
            for pid in ("p1", "keep"):
                tx.append_timeline([(pid, entry(1, f"{pid}-m1"))])
                tx.write_memberships([MembershipChange(pid, "vip", True, T0, "m1")])
                tx.append_outbox([outbox(pid, 1, pid.encode())])
                tx.record_feedback(pid, feedback(f"{pid}-d", "o1", "click"))
            tx.set_timers({"p1": at(60)})
        store.append_decisions([decision("p1-d", 1), decision("keep-d", 1, profile_id="keep")])
        store.fan_out(0, 10, route_to("hook"))
        [to_fail] = [d for d in store.due_deliveries("hook", LATER, 10) if d.profile_id == "p1"]
        store.fail(to_fail, 1, "400", at(3))  # a failed delivery of p1's
        with store.transaction() as tx:
            tx.append_outbox([outbox("p1", 2, b"p1-again"), outbox("p1", 4, b"p1-outbox")])
        store.fan_out(0, 1, route_to("hook"))  # a queued delivery of p1's, and an outbox row
        hashes = [suppression_hash(i) for i in (user("u1"), anonymous("a1"), anonymous("a2"))]

        erased = store.erase("p1", hashes, at(10))

        assert erased.profile_ids == ["p1", "stub"]
        assert sorted(erased.identifiers) == [anonymous("a1"), anonymous("a2"), user("u1")]
        for ref in ("p1", "stub", user("u1"), anonymous("a2")):
            assert store.find(ref) is None
        assert store.identifiers("p1") == []
        assert store.timeline("p1", before=None, limit=10) == []
        assert store.journal_of("p1") == [] and store.journal_of("stub") == []
        assert store.memberships("p1") == {}
        assert store.next_timer_at() is None
        assert [d.profile_id for d in store.due_deliveries("hook", LATER, 10)] == ["keep"]
        assert store.failed_deliveries(None, 0, 10) == []
        assert store.decision_records(["p1-d", "keep-d"]).keys() == {"keep-d"}
        assert [f.decision_id for _, f in store.feedback_after(0, 10)] == ["keep-d"]
        assert not store.outbox_pending()
        assert store.suppressed() >= set(hashes)
        # the rest is untouched
        assert store.find("keep") is not None
        assert store.identifiers("keep") == [user("u9")]
        assert len(store.timeline("keep", before=None, limit=10)) == 1
        assert store.memberships("keep") == {"vip": T0}
        assert len(store.journal_of("keep")) == 1
        assert store.profile_ids(None, 10) == ["keep"]
        # erasing again (a retried request) is harmless and keeps the hashes
        again = store.erase("p1", hashes, at(11))
        assert again.identifiers == []
        assert store.suppressed() >= set(hashes)
