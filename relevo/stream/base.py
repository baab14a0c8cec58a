"""The event log port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class StreamCapabilities:
    shared_between_processes: bool
    deduplicates: bool


@dataclass(frozen=True)
class Append:
    """One event to append: its profile key, dedup identity and encoded body."""

    key: str
    partition: int
    source: str
    message_id: str
    dedupe: bool
    payload: bytes


@dataclass(frozen=True)
class AppendOutcome:
    accepted: int
    duplicates: int
    conflicts: int  # duplicates whose payload differs from the first one seen


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    payload: bytes


class EventLog(Protocol):
    capabilities: ClassVar[StreamCapabilities]
    name: str
    partitions: int

    def start(self) -> None: ...
    async def append(self, items: list[Append]) -> AppendOutcome:
        """Append durably; returns once every accepted item is on disk (or the broker's)."""
        ...

    def read(self, partition: int, after: int, limit: int) -> list[Record]:
        """Records of one partition with offsets above ``after``, in order."""
        ...

    def end_offsets(self) -> dict[int, int]: ...
    def wait(self, beyond: dict[int, int], timeout: float) -> None:
        """Block until one of the partitions in ``beyond`` ends past its offset there, or
        ``timeout`` seconds pass (partitions not in ``beyond`` are not watched)."""
        ...

    def pending(self) -> int:
        """Events accepted by ``append`` callers but not yet durable."""
        ...

    async def erase_keys(self, keys: list[str]) -> int: ...
    def close(self) -> None: ...
