"""Managing destinations: definitions (checked against SSRF at save time), failed deliveries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio.to_thread
import msgspec

from relevo._clock import Clock
from relevo.channels.signing import new_secret, signature
from relevo.channels.ssrf import OutboundPolicy, check_url
from relevo.destinations.model import DestinationDefinition, parse_destination
from relevo.errors import NotFound, ValidationError
from relevo.store.base import DeliveryStore, FailedDelivery


class DestinationService:
    def __init__(self, store: DeliveryStore, clock: Clock, policy: OutboundPolicy) -> None:
        self._store = store
        self._clock = clock
        self.policy = policy
        self._cache: dict[str, DestinationDefinition] | None = None
        self.on_change: Callable[[], Awaitable[None]] | None = None

    def definitions(self) -> dict[str, DestinationDefinition]:
        if self._cache is None:
            self._cache = {
                name: msgspec.json.decode(raw, type=DestinationDefinition)
                for name, raw in self._store.list_destinations()
            }
        return self._cache

    def stamp(self) -> tuple[tuple[str, bytes], ...]:
        """The stored definitions: another process changed them when this does."""
        return tuple(sorted(self._store.list_destinations()))

    def forget_cached(self) -> None:
        """Read the definitions from the store again (another process changed them)."""
        self._cache = None

    def event_routes(self) -> frozenset[str]:
        """Event names and types that some enabled destination receives."""
        return frozenset(
            route for d in self.definitions().values() if d.enabled for route in d.events
        )

    async def put(self, data: object, name: str | None = None) -> DestinationDefinition:
        definition = parse_destination(data)
        if name is not None and definition.name != name:
            raise ValidationError(f"the definition is named {definition.name!r}, not {name!r}")
        check_url(definition.url, self.policy)  # SSRF, at save time (again at each send)
        if definition.secret is not None:
            signature(definition.secret, "msg_check", 0, b"")  # a malformed secret: refused now
        if definition.type == "webhook" and definition.secret is None:
            # an update that does not name a secret keeps the current one (the API never shows
            # it again, so a read-modify-write must not rotate it behind the receiver's back)
            current = self.definitions().get(definition.name)
            kept = current.secret if current is not None and current.type == "webhook" else None
            definition = msgspec.structs.replace(definition, secret=kept or new_secret())
        await anyio.to_thread.run_sync(
            self._store.put_destination,
            definition.name,
            msgspec.json.encode(definition),
            self._clock.now(),
        )
        await self._changed()
        return definition

    async def disable(self, name: str) -> None:
        """Keep the destination but stop sending to it (``enabled: false``)."""
        definition = self.definitions().get(name)
        if definition is None or not definition.enabled:
            return
        disabled = msgspec.structs.replace(definition, enabled=False)
        await anyio.to_thread.run_sync(
            self._store.put_destination, name, msgspec.json.encode(disabled), self._clock.now()
        )
        await self._changed()

    async def delete(self, name: str) -> None:
        if not await anyio.to_thread.run_sync(self._store.delete_destination, name):
            raise NotFound(f"no destination {name!r}")
        await self._changed()

    async def _changed(self) -> None:
        self._cache = None
        if self.on_change is not None:
            await self.on_change()

    def get(self, name: str) -> DestinationDefinition:
        definition = self.definitions().get(name)
        if definition is None:
            raise NotFound(f"no destination {name!r}")
        return definition

    def failed(self, destination: str | None, after: int, limit: int) -> list[FailedDelivery]:
        return self._store.failed_deliveries(destination, after, limit)

    def replay(self, ids: list[int], now: datetime | None = None) -> int:
        """Queue failed deliveries again; they keep their webhook ids."""
        return self._store.replay_failed(ids, now or self._clock.now()) if ids else 0
