"""What the processor remembers of the state store: the identity graph and live profiles.

Every lookup goes through the memo; misses go to the store transaction. The memo is kept
between cycles only when the processor is the store's one writer (the embedded store); it is
dropped whenever a cycle fails, so it never holds state that was rolled back.
"""

from __future__ import annotations

from itertools import islice
from typing import TypeVar

from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile
from relevo.store.base import StateTransaction

K = TypeVar("K")
V = TypeVar("V")


def _bounded_put(cache: dict[K, V], key: K, value: V, capacity: int) -> None:
    cache[key] = value
    if len(cache) > capacity:
        # drop the oldest tenth (insertion order): cheap, and good enough for a hot set
        for old in list(islice(cache, capacity // 10 or 1)):
            del cache[old]


class StateMemo:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.owners: dict[Identifier, str] = {}
        self.identifiers: dict[str, list[Identifier]] = {}
        self.profiles: dict[str, Profile] = {}

    def clear(self) -> None:
        self.owners.clear()
        self.identifiers.clear()
        self.profiles.clear()


class MemoView:
    """The identity graph and profiles as one cycle sees them: memo first, then the store."""

    def __init__(self, tx: StateTransaction, memo: StateMemo) -> None:
        self.tx = tx
        self.memo = memo

    def profile_of(self, identifier: Identifier) -> str | None:
        owner = self.memo.owners.get(identifier)
        if owner is None:
            owner = self.tx.profile_of(identifier)
            if owner is not None:
                _bounded_put(self.memo.owners, identifier, owner, self.memo.capacity)
        return owner

    def identifiers_of(self, profile_id: str) -> list[Identifier]:
        held = self.memo.identifiers.get(profile_id)
        if held is None:
            held = self.tx.identifiers_of(profile_id)
            _bounded_put(self.memo.identifiers, profile_id, held, self.memo.capacity)
        return held

    def profile(self, profile_id: str) -> Profile | None:
        profile = self.memo.profiles.get(profile_id)
        if profile is None:
            profile = self.tx.load(profile_id)
            if profile is not None:
                _bounded_put(self.memo.profiles, profile_id, profile, self.memo.capacity)
        return profile

    def add_profile(self, profile: Profile) -> None:
        _bounded_put(self.memo.profiles, profile.id, profile, self.memo.capacity)
        _bounded_put(self.memo.identifiers, profile.id, [], self.memo.capacity)

    def link(self, identifier: Identifier, profile_id: str) -> None:
        """Record a link the caller has written to the store."""
        self.identifiers_of(profile_id).append(identifier)
        _bounded_put(self.memo.owners, identifier, profile_id, self.memo.capacity)

    def absorb(self, survivor: str, merged: str) -> None:
        """Record a merge the caller has written to the store."""
        moved = self.memo.identifiers.pop(merged, None)
        if moved is None:
            moved = self.tx.identifiers_of(survivor)  # already moved in the store: reload
            self.memo.identifiers[survivor] = moved
        else:
            self.identifiers_of(survivor).extend(moved)
        for identifier in moved:
            self.memo.owners[identifier] = survivor
        self.memo.profiles.pop(merged, None)
