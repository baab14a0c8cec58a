"""Reading and erasing profiles (the write side is the processor's)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
import msgspec

from relevo._clock import Clock
from relevo.errors import NotFound, ValidationError
from relevo.events.keys import anonymous_key, user_key
from relevo.events.model import decode_event
from relevo.profiles.identifiers import ALIAS, ANONYMOUS_ID, USER_ID, Identifier, parse_identifier
from relevo.profiles.model import Profile
from relevo.profiles.suppression import suppression_hash
from relevo.store.base import ErasedPerson, JournalEntry, KeyStore, ProfileStore
from relevo.stream.base import EventLog


@dataclass(frozen=True)
class ProfileView:
    profile: Profile
    identifiers: list[Identifier]
    journal: list[JournalEntry]
    segments: dict[str, datetime]
    computed: dict[str, Any]


@dataclass(frozen=True)
class TimelinePage:
    events: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class Erasure:
    person: ErasedPerson
    log_events_erased: int


def _aliased_as(identifiers: list[Identifier]) -> list[Identifier]:
    """An alias's previousId as the anonymous id it stands for: the resolver routes that
    anonymous id's events to the alias's profile (never a user id's: see profiles.identity)."""
    return [Identifier(ANONYMOUS_ID, i.value) for i in identifiers if i.type == ALIAS]


def parse_ref(ref: str) -> str | Identifier:
    """A profile id (``prf_...``) or a ``type:value`` identifier."""
    return parse_identifier(ref) if ":" in ref else ref


def encode_cursor(at_micros: int, message_id: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{at_micros}:{seq}:{message_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str, int]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        at, seq, message_id = text.split(":", 2)  # the message id may hold colons
        position = int(at), message_id, int(seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("cursor is not one this API handed out") from exc
    if not all(-(2**63) <= n < 2**63 for n in (position[0], position[2])):
        raise ValidationError("cursor is not one this API handed out")
    return position


class ProfileService:
    def __init__(
        self,
        store: ProfileStore,
        keys: KeyStore,
        log: EventLog,
        clock: Clock,
        on_writer: Callable[[Callable[[], Any]], Future[Any]],
        on_suppress: Callable[[list[str]], None],
        computed_values: Callable[[Profile], dict[str, Any]],
    ) -> None:
        self._computed_values = computed_values
        self._store = store
        self._keys = keys
        self._log = log
        self._clock = clock
        self._on_writer = on_writer
        self._on_suppress = on_suppress

    def _find(self, ref: str) -> Profile:
        parsed = parse_ref(ref)
        profile = self._store.find(parsed)
        if profile is None and isinstance(parsed, Identifier) and parsed.type == ANONYMOUS_ID:
            # aliased before any event of its own arrived: the identity graph knows it as alias
            profile = self._store.find(Identifier(ALIAS, parsed.value))
        if profile is None:
            raise NotFound(f"no profile {ref!r}")
        return profile

    async def get(self, ref: str) -> ProfileView:
        def read() -> ProfileView:
            profile = self._find(ref)
            return ProfileView(
                profile,
                self._store.identifiers(profile.id),
                self._store.journal_of(profile.id),
                self._store.memberships(profile.id),
                self._computed_values(profile),
            )

        return await anyio.to_thread.run_sync(read)

    async def events(self, ref: str, cursor: str | None, limit: int) -> TimelinePage:
        before = decode_cursor(cursor) if cursor else None

        def read() -> TimelinePage:
            profile = self._find(ref)
            entries = self._store.timeline(profile.id, before=before, limit=limit + 1)
            more = len(entries) > limit
            entries = entries[:limit]
            events = [msgspec.to_builtins(decode_event(e.payload)) for e in entries]
            last = entries[-1] if more else None
            next_cursor = (
                encode_cursor(int(last.at.timestamp() * 1_000_000), last.message_id, last.seq)
                if last
                else None
            )
            return TimelinePage(events, next_cursor)

        return await anyio.to_thread.run_sync(read)

    async def erase(self, ref: str, actor: str) -> Erasure:
        """Erase a person from the store and the log, and suppress their identifiers.

        Runs on the processor's thread so no cycle in flight can write the person back.
        """

        def erase_on_writer() -> ErasedPerson:
            profile = self._find(ref)
            identifiers = self._store.identifiers(profile.id)
            hashes = [suppression_hash(i) for i in [*identifiers, *_aliased_as(identifiers)]]
            person = self._store.erase(profile.id, hashes, self._clock.now())
            self._on_suppress(hashes)
            return person

        person: ErasedPerson = await asyncio.wrap_future(self._on_writer(erase_on_writer))
        log_keys = [user_key(i.value) for i in person.identifiers if i.type == USER_ID] + [
            anonymous_key(i.value) for i in person.identifiers if i.type in (ANONYMOUS_ID, ALIAS)
        ]
        erased = await self._log.erase_keys(log_keys) if log_keys else 0
        self._keys.audit(
            self._clock.now(),
            actor,
            "profile.erase",
            person.profile_ids[0],
            {"profiles": len(person.profile_ids), "identifiers": len(person.identifiers)},
        )
        return Erasure(person, erased)
