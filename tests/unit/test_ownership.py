"""Rendezvous assignment of partitions to workers: complete, stable, balanced enough."""

from __future__ import annotations

from relevo.pipeline.ownership import assignment, owned_by


def test_every_partition_has_exactly_one_owner() -> None:
    workers = ["w1", "w2", "w3"]
    shares = [set(owned_by(w, workers, 64)) for w in workers]
    assert set().union(*shares) == set(range(64))
    assert sum(len(s) for s in shares) == 64
    assert all(len(s) >= 8 for s in shares)  # no worker starves (expected ~21 each)


def test_a_joining_worker_moves_only_what_it_takes() -> None:
    before = {p: assignment(p, ["w1", "w2"]) for p in range(64)}
    after = {p: assignment(p, ["w1", "w2", "w3"]) for p in range(64)}
    moved = [p for p in range(64) if before[p] != after[p]]
    assert moved and all(after[p] == "w3" for p in moved)


def test_a_dead_workers_partitions_spread_and_others_stay() -> None:
    before = {p: assignment(p, ["w1", "w2", "w3"]) for p in range(64)}
    after = {p: assignment(p, ["w1", "w3"]) for p in range(64)}
    for p in range(64):
        if before[p] != "w2":
            assert after[p] == before[p]
    orphans = {after[p] for p in range(64) if before[p] == "w2"}
    assert orphans == {"w1", "w3"}


def test_a_worker_alone_owns_everything() -> None:
    assert owned_by("solo", [], 8) == list(range(8))
