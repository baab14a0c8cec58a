"""Which worker consumes which partition: rendezvous hashing with bounded loads over the live
workers, held with leases in the state store.

Every worker heartbeats; from the live workers each one computes the same assignment (see
``plan``): even (no worker holds more than its share), mostly stable (a joining worker takes
about 1/n of the partitions, a dead one's spread over the rest), with no coordinator. A
worker leases what the assignment gives it and releases what it no longer owns;
a lease that is not renewed expires, so a worker that died (kill -9) loses its partitions
after ``ttl``.

A lease alone cannot stop a paused worker from committing after its lease passed to another
(a GC pause, a stopped VM). The processor's offsets are committed with compare-and-set in the
same transaction as the state, so the stale worker's commit fails and nothing is applied twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from relevo.store.base import LeaseStore


def plan(workers: Iterable[str], partitions: int) -> dict[int, str]:
    """Partition -> worker among the live ``workers``: each partition goes to the worker that
    ranks it highest by rendezvous hash among those not yet at their share (at most
    ceil(partitions / workers) each), so the load is even and most partitions stay put when a
    worker joins or leaves."""
    live = sorted(set(workers))
    share = -(-partitions // len(live))
    load = dict.fromkeys(live, 0)
    owners: dict[int, str] = {}
    for partition in range(partitions):
        for worker in sorted(live, key=lambda w: _score(partition, w), reverse=True):
            if load[worker] < share:
                owners[partition] = worker
                load[worker] += 1
                break
    return owners


def owned_by(worker: str, workers: Iterable[str], partitions: int) -> list[int]:
    """The partitions ``worker`` should own among the live ``workers``."""
    owners = plan({*workers, worker}, partitions)
    return [p for p, owner in owners.items() if owner == worker]


def _score(partition: int, worker: str) -> int:
    digest = hashlib.blake2b(f"{partition}\x1f{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Ownership:
    """One worker's view: renew it every ``ttl / 3``; ``partitions`` is what it may consume."""

    def __init__(
        self, store: LeaseStore, stream: str, worker: str, partitions: int, ttl: timedelta
    ) -> None:
        self._store = store
        self._stream = stream
        self.worker = worker
        self._count = partitions
        self.ttl = ttl
        self.partitions: frozenset[int] = frozenset()

    def renew(self, now: datetime) -> frozenset[int]:
        live = self._store.heartbeat(self.worker, now, self.ttl)
        wanted = owned_by(self.worker, live, self._count)
        held = self._store.lease(self._stream, self.worker, wanted, now, self.ttl)
        self.partitions = frozenset(held)
        return self.partitions
