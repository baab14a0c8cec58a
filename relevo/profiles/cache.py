"""Profiles the decide path read recently, dropped as soon as the processor changes them.

The processor calls :meth:`ProfileCache.invalidate` after each commit with the profiles it
changed or merged away, so a decision made after the commit never sees the state before it.
A read racing a commit does not put stale state back: a load only enters the cache if no
invalidation happened while it ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile

Finder = Callable[[Identifier], Profile | None]


class ProfileCache:
    def __init__(self, find: Finder, capacity: int = 100_000) -> None:
        self._find = find
        self._capacity = capacity
        self._owners: dict[Identifier, str] = {}
        self._profiles: dict[str, Profile] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, identifier: Identifier) -> Profile | None:
        """The profile ``identifier`` belongs to, or None (unknown identifiers are not kept:
        the next event may create the profile)."""
        profile_id = self._owners.get(identifier)
        if profile_id is not None:
            profile = self._profiles.get(profile_id)
            if profile is not None:
                return profile
        generation = self._generation
        profile = self._find(identifier)
        if profile is None:
            return None
        with self._lock:
            if generation == self._generation:
                if len(self._profiles) >= self._capacity:
                    self._evict()
                self._owners[identifier] = profile.id
                self._profiles[profile.id] = profile
        return profile

    def changed(self, profile_ids: list[str] | None) -> None:
        """A profile change notice: drop those profiles, or (None) every profile."""
        if profile_ids is None:
            self.clear()
        else:
            self.invalidate(profile_ids)

    def invalidate(self, profile_ids: Iterable[str]) -> None:
        with self._lock:
            self._generation += 1
            for profile_id in profile_ids:
                self._profiles.pop(profile_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._profiles.clear()
            self._owners.clear()

    def _evict(self) -> None:
        """Drop the oldest tenth (insertion order) of profiles and of identifiers."""
        for profile_id in list(self._profiles)[: max(1, len(self._profiles) // 10)]:
            del self._profiles[profile_id]
        for identifier in list(self._owners)[: max(1, len(self._owners) // 10)]:
            del self._owners[identifier]
