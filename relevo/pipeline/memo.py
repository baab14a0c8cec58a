"""What the processor remembers of the state store: the identity graph and live profiles.

Every lookup goes through the memo; misses go to the store transaction. The memo is kept
between cycles only when the processor is the store's one writer (the embedded store); it is
dropped whenever a cycle fails, so it never holds state that was rolled back.
"""

from __future__ import annotations

from datetime import datetime
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
    """The identity graph and profiles as one cycle sees them: memo first, then the store.

    ``prefetch`` looks up a whole cycle's identifiers and profiles in a few round trips, and
    new links are written in one batch (before anything that reads identities in SQL).
    """

    def __init__(self, tx: StateTransaction, memo: StateMemo) -> None:
        self.tx = tx
        self.memo = memo
        self._unknown: set[Identifier] = set()
        self._pending: list[tuple[Identifier, str, datetime]] = []

    def prefetch(self, identifiers: set[Identifier]) -> None:
        """Learn the owners (and profiles) of ``identifiers``; the rest are known unknown."""
        memo = self.memo
        asked = [i for i in identifiers if i not in memo.owners]
        found = self.tx.owners(asked) if asked else {}
        for identifier, owner in found.items():
            _bounded_put(memo.owners, identifier, owner, memo.capacity)
        self._unknown.update(i for i in asked if i not in found)
        wanted = {memo.owners[i] for i in identifiers if i in memo.owners}
        missing = [pid for pid in wanted if pid not in memo.profiles]
        for profile_id, profile in (self.tx.load_many(missing) if missing else {}).items():
            _bounded_put(memo.profiles, profile_id, profile, memo.capacity)

    def profile_of(self, identifier: Identifier) -> str | None:
        owner = self.memo.owners.get(identifier)
        if owner is None:
            if identifier in self._unknown:
                return None
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

    def link(self, identifier: Identifier, profile_id: str, at: datetime) -> None:
        """Attach an identifier to a profile (written to the store by ``flush_links``)."""
        self.identifiers_of(profile_id).append(identifier)
        _bounded_put(self.memo.owners, identifier, profile_id, self.memo.capacity)
        self._unknown.discard(identifier)
        self._pending.append((identifier, profile_id, at))

    def flush_links(self) -> None:
        if self._pending:
            self.tx.link(self._pending)
            self._pending = []

    def absorb(self, survivor: str, merged: str) -> None:
        """Merge ``merged`` into ``survivor`` in the store (identifiers, timeline) and here."""
        self.flush_links()
        self.tx.absorb(survivor, merged)
        moved = self.memo.identifiers.pop(merged, None)
        if moved is None:
            moved = self.tx.identifiers_of(survivor)  # already moved in the store: reload
            self.memo.identifiers[survivor] = moved
        else:
            self.identifiers_of(survivor).extend(moved)
        for identifier in moved:
            self.memo.owners[identifier] = survivor
        self.memo.profiles.pop(merged, None)
