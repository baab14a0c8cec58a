"""The ports of the state store. Backends implement these; domain code speaks only to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from relevo.decisions.log import DecisionRecord, Feedback, LoggedDecision
from relevo.errors import Conflict
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile
from relevo.segments.changes import MembershipChange


@dataclass(frozen=True)
class StoreCapabilities:
    """What a backend can do, declared up front and checked at start."""

    shared_between_processes: bool


class TransactionConflict(Conflict):
    """Another transaction changed what this one read (or wrote the same key first): nothing
    of this one was committed, and running the unit of work again is safe.

    Raised only by stores shared between processes; a single-writer store never needs it.
    """

    code = "transaction_conflict"


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    message_id: str
    payload: bytes
    # the store's order of arrival: (at, message_id) alone is not unique (two sources may
    # send one messageId), so pages break ties on it
    seq: int = 0


@dataclass(frozen=True)
class JournalEntry:
    at: datetime
    outcome: str  # "merged" | "refused"
    survivor: str
    other: str | None
    identifier: str
    reason: str
    message_id: str
    source: str


class StateTransaction(Protocol):
    """One unit of work of the processor: everything in it commits together, or nothing."""

    def profile_of(self, identifier: Identifier) -> str | None: ...
    def identifiers_of(self, profile_id: str) -> list[Identifier]: ...
    def owners(self, identifiers: list[Identifier]) -> dict[Identifier, str]:
        """The profiles of the known ones among ``identifiers`` (one round trip)."""
        ...

    def load(self, profile_id: str) -> Profile | None: ...
    def load_many(self, profile_ids: list[str]) -> dict[str, Profile]: ...
    def save(self, profiles: list[Profile]) -> None:
        """Write the profiles back: those this transaction loaded, and new ones.

        A store shared between processes raises ``TransactionConflict`` when another
        transaction changed (or merged away, or erased) a loaded profile since it was loaded,
        or created a "new" one meanwhile: an update is never lost silently.
        """
        ...

    def link(self, links: list[tuple[Identifier, str, datetime]]) -> None:
        """Attach each identifier to its profile."""
        ...

    def absorb(self, survivor: str, merged: str) -> None:
        """Move the identifiers and timeline of ``merged`` to ``survivor``; retire ``merged``.

        The caller loads both and saves ``survivor`` in the same transaction; a shared store
        raises ``TransactionConflict`` if ``merged`` changed since it was loaded.
        """
        ...

    def append_timeline(self, entries: list[tuple[str, TimelineEntry]]) -> None: ...
    def trim_timeline(self, profile_id: str, keep: int) -> int: ...
    def journal(self, entry: JournalEntry) -> None: ...
    def record_failure(
        self, stream: str, partition: int, offset: int, error: str, payload: bytes, at: datetime
    ) -> None: ...
    def write_memberships(self, changes: list[MembershipChange]) -> None: ...
    def append_outbox(self, rows: list[OutboxRow]) -> None: ...
    def set_timers(self, timers: dict[str, datetime | None]) -> None:
        """Set (or, with None, clear) when each profile's timed segments are due."""
        ...

    def due_timers(self, now: datetime, limit: int) -> list[str]: ...
    def record_feedback(self, profile_id: str, feedback: Feedback) -> bool:
        """Record an impression, click or conversion; False if it was already recorded."""
        ...

    def count_impressions(self, keys: list[tuple[str, int | None]]) -> None:
        """Add one to each impression counter (key, hour or None for lifetime)."""
        ...

    def offsets(self, stream: str) -> dict[int, int]: ...
    def set_offset(
        self, stream: str, partition: int, offset: int, *, expected: int | None = None
    ) -> None:
        """Record the consumer offset. With ``expected``, only if the stored one (0 when
        none) is still ``expected``, else TransactionConflict: a worker that lost its
        partition to another while it worked cannot commit the events a second time."""
        ...


@dataclass(frozen=True)
class OutboxRow:
    at: datetime
    kind: str  # "segment" | "event"
    profile_id: str
    payload: bytes


@dataclass(frozen=True)
class StoredSegment:
    name: str
    definition: bytes  # JSON of the SegmentDefinition
    version: str
    backfilled_version: str | None


@dataclass(frozen=True)
class ErasedPerson:
    profile_ids: list[str]
    identifiers: list[Identifier]


class ProfileStore(Protocol):
    capabilities: ClassVar[StoreCapabilities]

    def migrate(self) -> None: ...
    def transaction(self) -> AbstractContextManager[StateTransaction]: ...
    def find(self, ref: str | Identifier) -> Profile | None:
        """A live profile by id (following merges) or by identifier; None when unknown."""
        ...

    def identifiers(self, profile_id: str) -> list[Identifier]: ...
    def timeline(
        self, profile_id: str, *, before: tuple[int, str, int] | None, limit: int
    ) -> list[TimelineEntry]:
        """Newest first by (at, message_id, seq); ``before`` is the last one already seen."""
        ...

    def journal_of(self, profile_id: str) -> list[JournalEntry]: ...
    def erase(self, profile_id: str, suppress: list[str], at: datetime) -> ErasedPerson:
        """Delete a person everywhere in the store and record their suppressed hashes."""
        ...

    def suppressed(self) -> set[str]: ...
    def memberships(self, profile_id: str) -> dict[str, datetime]: ...
    def close(self) -> None: ...


class SegmentStore(Protocol):
    def list_segments(self) -> list[StoredSegment]: ...
    def put_segment(self, segment: StoredSegment, at: datetime) -> None: ...
    def delete_segment(self, name: str) -> bool: ...
    def mark_backfilled(self, name: str, version: str) -> None: ...
    def segment_size(self, name: str) -> int: ...
    def segment_members(
        self, name: str, after: str | None, limit: int
    ) -> list[tuple[str, datetime]]: ...
    def profile_ids(self, after: str | None, limit: int) -> list[str]: ...
    def profile_count(self) -> int: ...
    def next_timer_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class Source:
    name: str
    allowed_origins: list[str]


@dataclass(frozen=True)
class ApiKey:
    id: str
    kind: str  # "write" | "server" | "admin"
    source: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyStore(Protocol):
    def create_key(self, key: ApiKey, secret_hash: str) -> None: ...
    def key_by_hash(self, secret_hash: str) -> ApiKey | None: ...
    def list_keys(self) -> list[ApiKey]: ...
    def revoke_key(self, key_id: str, at: datetime) -> bool: ...
    def upsert_source(self, source: Source) -> None: ...
    def get_source(self, name: str) -> Source | None: ...
    def list_sources(self) -> list[Source]: ...
    def audit(self, at: datetime, actor: str, action: str, target: str, details: Any) -> None: ...


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    at: datetime
    kind: str
    profile_id: str
    payload: bytes


@dataclass(frozen=True)
class Delivery:
    id: int
    destination: str
    webhook_id: str
    profile_id: str
    payload: bytes
    attempts: int
    first_at: datetime
    next_at: datetime
    last_error: str | None = None


@dataclass(frozen=True)
class FailedDelivery:
    id: int
    destination: str
    webhook_id: str
    profile_id: str
    payload: bytes
    attempts: int
    reason: str
    failed_at: datetime


class ProcessorStore(ProfileStore, SegmentStore, Protocol):
    """What the processor needs: profile state, and segment timers and backfills."""


class DeliveryStore(Protocol):
    """Destinations, the outbox they are fed from, and their delivery queues."""

    def outbox_pending(self) -> bool:
        """Whether the outbox holds anything (a cheap read, polled often)."""
        ...

    def list_destinations(self) -> list[tuple[str, bytes]]: ...
    def put_destination(self, name: str, definition: bytes, at: datetime) -> None: ...
    def delete_destination(self, name: str) -> bool: ...
    def fan_out(
        self, after: int, limit: int, route: Callable[[OutboxEntry], list[Delivery]]
    ) -> int:
        """Turn outbox entries past ``after`` into deliveries, advancing the outbox cursor
        in the same transaction; returns how many entries were consumed."""
        ...

    def outbox_cursor(self) -> int: ...
    def due_deliveries(self, destination: str, now: datetime, limit: int) -> list[Delivery]: ...
    def delivered(self, delivery_id: int) -> None: ...
    def reschedule(
        self, delivery_id: int, attempts: int, next_at: datetime, error: str
    ) -> None: ...
    def fail(self, delivery: Delivery, attempts: int, reason: str, at: datetime) -> None: ...
    def failed_deliveries(
        self, destination: str | None, after: int, limit: int
    ) -> list[FailedDelivery]: ...
    def replay_failed(self, ids: list[int], now: datetime) -> int: ...


@dataclass(frozen=True)
class StoredPolicy:
    name: str
    algorithm: str
    state: bytes
    version: int


@dataclass(frozen=True)
class VariantCounts:
    """Decisions of one experiment variant (or "holdout", or "" for personalised) and how
    many of them earned an impression, a click, a conversion."""

    variant: str
    decisions: int
    impressions: int
    clicks: int
    conversions: int
    conversion_value: float


class DecisionStore(Protocol):
    """The catalog, the decision log, feedback, impression counters and policy state."""

    def catalog_items(self) -> list[tuple[str, str, bytes]]: ...
    def put_catalog_item(self, kind: str, item: str, definition: bytes, at: datetime) -> None: ...
    def delete_catalog_item(self, kind: str, item: str) -> bool: ...
    def catalog_stamp(self) -> tuple[int, str | None]: ...
    def append_decisions(self, records: list[DecisionRecord]) -> None: ...
    def decision_records(self, ids: list[str]) -> dict[str, DecisionRecord]: ...
    def logged(
        self, placement: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[LoggedDecision]: ...
    def variant_counts(self, experiment: str | None, placement: str) -> list[VariantCounts]: ...
    def feedback_after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]: ...
    def feedback_of(self, decision_ids: list[str]) -> list[tuple[int, Feedback]]: ...
    def impression_counters(self, since_hour: int) -> dict[str, int]: ...
    def prune_counters(self, before_hour: int) -> int: ...
    def policies(self) -> dict[str, int]: ...
    def load_policies(self, names: list[str] | None = None) -> list[StoredPolicy]: ...
    def save_policies(
        self,
        states: dict[str, tuple[str, bytes]],
        cursor: int,
        at: datetime,
        *,
        expected: int | None = None,
    ) -> None: ...
    def learner_cursor(self) -> int: ...


FORGET_WORKERS_AFTER = timedelta(hours=1)  # a dead worker's heartbeat row is deleted after this


class LeaseStore(Protocol):
    """Worker heartbeats and partition leases (see relevo.pipeline.ownership)."""

    def heartbeat(self, worker: str, now: datetime, ttl: timedelta) -> list[str]: ...
    def lease(
        self, stream: str, worker: str, wanted: list[int], now: datetime, ttl: timedelta
    ) -> list[int]: ...


class Store(ProcessorStore, KeyStore, DeliveryStore, DecisionStore, LeaseStore, Protocol):
    """Everything a node asks of its state store; every backend implements all of it (and
    passes ``relevo.testing.store_conformance``)."""
