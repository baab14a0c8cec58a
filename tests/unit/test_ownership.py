"""Assignment of partitions to workers: complete, even, mostly stable, the same everywhere."""

from __future__ import annotations

from relevo.pipeline.ownership import owned_by, plan


def test_every_partition_has_exactly_one_owner_and_nobody_more_than_its_share() -> None:
    for workers, partitions in ((["w1", "w2"], 8), (["w1", "w2", "w3"], 64), (["a"], 5)):
        owners = plan(workers, partitions)
        assert set(owners) == set(range(partitions))
        loads = [list(owners.values()).count(w) for w in workers]
        assert max(loads) <= -(-partitions // len(workers)), loads  # nobody over its share


def test_every_worker_computes_the_same_plan() -> None:
    assert plan(["w2", "w1", "w3"], 32) == plan(["w3", "w1", "w2"], 32)
    shares = [set(owned_by(w, ["w1", "w2", "w3"], 32)) for w in ("w1", "w2", "w3")]
    assert set().union(*shares) == set(range(32)) and sum(map(len, shares)) == 32


def test_a_joining_or_leaving_worker_moves_a_minority() -> None:
    two = plan(["w1", "w2"], 64)
    three = plan(["w1", "w2", "w3"], 64)
    moved = [p for p in range(64) if two[p] != three[p]]
    assert len(moved) < 32
    assert sum(1 for p in moved if three[p] == "w3") >= len(moved) // 2


def test_a_worker_alone_owns_everything() -> None:
    assert owned_by("solo", [], 8) == list(range(8))
