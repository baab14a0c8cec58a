"""Profile change notices: the processor says which profiles a commit changed; every node's
decide cache drops them.

In one process (``memory://``) a notice is a function call. Across processes
(``redis://...``) it is a Redis pub/sub message; a subscriber that loses its connection may
have missed notices, so on reconnecting it is told to drop everything (``None``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Listener = Callable[[list[str] | None], None]  # profile ids, or None: forget every profile


class ProfileChanges(Protocol):
    def publish(self, profile_ids: list[str]) -> None: ...
    def subscribe(self, listener: Listener) -> None: ...
    def close(self) -> None: ...


class LocalChanges:
    """``memory://``: the processor and the decide cache share the process."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def publish(self, profile_ids: list[str]) -> None:
        for listener in self._listeners:
            listener(profile_ids)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def close(self) -> None:
        self._listeners.clear()
