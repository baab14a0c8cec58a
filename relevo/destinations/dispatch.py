"""The dispatcher: outbox effects to per-destination queues, and deliveries out of them.

Fan-out turns each outbox effect into one delivery per destination that wants it (and whose
consent purposes the profile granted), advancing its cursor in the same transaction. Each
destination then has a worker of its own with its own concurrency, so one slow or broken
destination never delays the others. A failed attempt is retried with backoff and full jitter
(honouring ``Retry-After``); a permanent error or a spent retry budget moves the delivery to
the failed-deliveries store, from which it can be replayed with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime

import anyio.to_thread
import msgspec

from relevo._clock import Clock
from relevo.channels import audiences
from relevo.channels.errors import OutboundError
from relevo.channels.http import OutboundClient, OutboundResponse
from relevo.channels.retry import (
    RetryPolicy,
    RetrySchedule,
    Verdict,
    classify,
    retry_after_from_headers,
)
from relevo.channels.signing import sign
from relevo.destinations.members import audience_member
from relevo.destinations.model import DestinationDefinition, webhook_id
from relevo.destinations.service import DestinationService
from relevo.errors import RelevoError
from relevo.metrics import Metrics
from relevo.store.base import Delivery, OutboxEntry, Store

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often a worker looks for retries that fell due
FAN_OUT_POLL_SECONDS = 0.01  # how often the outbox is looked at (a read; cheap when empty)
FAN_OUT_BATCH = 500
IN_FLIGHT_PER_DESTINATION = 8


class _Effect(msgspec.Struct, rename="camel"):
    """The fields of an outbox payload that routing reads."""

    type: str
    profile_id: str
    segment: str | None = None
    event: str | dict[str, object] | None = None


_effect = msgspec.json.Decoder(_Effect)


def _granted(definition: DestinationDefinition, consent: dict[str, bool]) -> bool:
    """Every purpose the destination needs is granted (a missing answer is a refusal)."""
    return all(consent.get(purpose) is True for purpose in definition.consent)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        destinations: DestinationService,
        clock: Clock,
        metrics: Metrics,
        retry: RetryPolicy,
        *,
        client: OutboundClient | None = None,
        seed: int | None = None,
    ) -> None:
        self._store = store
        self._destinations = destinations
        self._clock = clock
        self._metrics = metrics
        self._schedule = RetrySchedule(retry, rng=random.Random(seed), clock=clock)
        self._client = client or OutboundClient(destinations.policy)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._kick = asyncio.Event()  # new deliveries were queued: idle workers look now

    async def run(self) -> None:
        """Fan out and keep one worker per enabled destination, until ``stop``."""
        try:
            while not self._stopping.is_set():
                try:
                    moved = await self._fan_out()
                    self._keep_workers()
                except Exception:  # process boundary: log, and try again shortly
                    log.exception("dispatcher fan-out failed")
                    moved = 0
                if moved:
                    self._kick.set()  # wakes every idle worker...
                    self._kick.clear()  # ...once
                else:
                    await self._sleep(FAN_OUT_POLL_SECONDS)
        finally:
            for task in self._workers.values():
                task.cancel()
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
            await self._client.aclose()

    def stop(self) -> None:
        self._stopping.set()
        self._kick.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- fan-out ------------------------------------------------------------------------------

    async def _fan_out(self) -> int:
        # consumed even while no destination is defined: effects are routed to the destinations
        # that exist when they happen, so a new destination does not get a flood of old ones.
        # The store reads the outbox sequence inside its transaction (``after`` is a floor).
        # Whether there is anything is asked on the loop: a read of a few microseconds that a
        # writer does not block (WAL), where a trip through a worker thread 100 times a second
        # would cost an idle node about 3 % of a core.
        if not self._store.outbox_pending():
            return 0
        return await anyio.to_thread.run_sync(self._store.fan_out, 0, FAN_OUT_BATCH, self._route)

    def _route(self, entry: OutboxEntry) -> list[Delivery]:
        """The deliveries of one effect (runs inside the fan-out transaction's thread)."""
        effect = _effect.decode(entry.payload)
        consent: dict[str, bool] | None = None
        deliveries: list[Delivery] = []
        for definition in self._destinations.definitions().values():
            if not definition.enabled or not self._wants(definition, effect):
                continue
            if definition.consent:
                if consent is None:
                    consent = self._consent(effect.profile_id)
                if not _granted(definition, consent):
                    self._metrics.deliveries.labels(definition.name, "no_consent").inc()
                    continue
            payload = self._payload(definition, entry, effect)
            if payload is None:
                continue
            deliveries.append(
                Delivery(
                    id=0,
                    destination=definition.name,
                    webhook_id=webhook_id(definition.name, entry.id),
                    profile_id=entry.profile_id,
                    payload=payload,
                    attempts=0,
                    first_at=entry.at,
                    next_at=entry.at,
                )
            )
        return deliveries

    @staticmethod
    def _wants(definition: DestinationDefinition, effect: _Effect) -> bool:
        if effect.type == "segment":
            return effect.segment is not None and definition.wants_segment(effect.segment)
        event = effect.event if isinstance(effect.event, dict) else {}
        name = event.get("event") or event.get("name")
        return definition.wants_event(
            str(event.get("type", "")), name if isinstance(name, str) else None
        )

    def _consent(self, profile_id: str) -> dict[str, bool]:
        profile = self._store.find(profile_id)
        if profile is None:
            return {}
        return {purpose: s.value is True for purpose, s in profile.consent.items()}

    def _payload(
        self, definition: DestinationDefinition, entry: OutboxEntry, effect: _Effect
    ) -> bytes | None:
        if definition.type == "webhook":
            return entry.payload
        # an audience: hash the profile's identifiers now, so no plain value is ever queued
        platform = audiences.Platform(definition.platform or "google")
        member = audience_member(self._store, entry.profile_id)
        entered = effect.event == "Segment Entered"
        change = audiences.MembershipChange(
            audience_id=effect.segment or "",
            added=[member] if entered else [],
            removed=[] if entered else [member],
        )
        plan = audiences.build_batches(change, platform)
        if not plan.batches:
            return None
        batch = plan.batches[0]
        return msgspec.json.encode(
            {"operation": batch.operation, "audience": batch.audience_id, "body": batch.body}
        )

    # -- delivery -----------------------------------------------------------------------------

    def _keep_workers(self) -> None:
        wanted = {n for n, d in self._destinations.definitions().items() if d.enabled}
        for name in list(self._workers):
            if name not in wanted:
                self._workers.pop(name).cancel()
        for name in wanted - set(self._workers):
            self._workers[name] = asyncio.create_task(self._worker(name), name=f"deliver-{name}")

    async def _worker(self, name: str) -> None:
        gate = asyncio.Semaphore(IN_FLIGHT_PER_DESTINATION)
        in_flight: set[int] = set()
        # Attempts that are over, but that a queue read started before their outcome was
        # committed may still return as due: they leave ``in_flight`` only once a read that
        # started after them has come back (dropping them at once sent a delivery twice).
        finished: set[int] = set()

        async def attempt(delivery: Delivery) -> None:
            async with gate:
                try:
                    await self._attempt(delivery)
                except Exception:  # process boundary: the delivery stays queued
                    log.exception("delivery %s to %s failed unexpectedly", delivery.id, name)
                finally:
                    finished.add(delivery.id)

        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                settled = set(finished)  # their outcomes are committed before this read
                due = await anyio.to_thread.run_sync(
                    self._store.due_deliveries,
                    name,
                    self._clock.now(),
                    IN_FLIGHT_PER_DESTINATION * 2,
                )
                in_flight.difference_update(settled)
                finished.difference_update(settled)
                fresh = [d for d in due if d.id not in in_flight]
                for delivery in fresh:
                    in_flight.add(delivery.id)
                    task = asyncio.create_task(attempt(delivery))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if not fresh:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._kick.wait(), POLL_SECONDS)
                else:
                    await asyncio.sleep(0)
        finally:
            # a stopped, removed or disabled destination's attempts stop with it (before the
            # client and the store close); an interrupted delivery stays queued and is sent
            # again later with the same webhook id
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _attempt(self, delivery: Delivery) -> None:
        definition = self._destinations.definitions().get(delivery.destination)
        if definition is None or not definition.enabled:
            return
        if definition.consent:
            consent = await anyio.to_thread.run_sync(self._consent, delivery.profile_id)
            if not _granted(definition, consent):
                # withdrawn since the delivery was queued: purged, never sent
                await anyio.to_thread.run_sync(self._store.delivered, delivery.id)
                self._metrics.deliveries.labels(definition.name, "no_consent").inc()
                return
        outcome: OutboundResponse | BaseException
        try:
            outcome = await self._send(definition, delivery, self._clock.now())
        except (OutboundError, RelevoError) as exc:
            outcome = exc
        # what follows counts from the answer, not from the request: a Retry-After is relative
        # to the response, and a slow answer must not shorten the wait it asks for
        now = self._clock.now()
        verdict = classify(outcome)
        attempts = delivery.attempts + 1
        if verdict.verdict is Verdict.SUCCESS:
            await anyio.to_thread.run_sync(self._store.delivered, delivery.id)
            self._metrics.deliveries.labels(definition.name, "delivered").inc()
            self._metrics.delivery_latency.observe((now - delivery.first_at).total_seconds())
            return
        retry_after = (
            retry_after_from_headers(outcome.headers, now)
            if isinstance(outcome, OutboundResponse)
            else None
        )
        next_at = (
            self._schedule.next_attempt(
                attempts, now, retry_after, first_attempt_at=delivery.first_at
            )
            if verdict.verdict is Verdict.RETRY
            else None
        )
        if next_at is None:
            await anyio.to_thread.run_sync(
                self._store.fail, delivery, attempts, verdict.reason, now
            )
            self._metrics.deliveries.labels(definition.name, "failed").inc()
            if verdict.disable_endpoint:
                await self._disable(definition, verdict.reason)
            return
        await anyio.to_thread.run_sync(
            self._store.reschedule, delivery.id, attempts, next_at, verdict.reason
        )
        self._metrics.deliveries.labels(definition.name, "retried").inc()

    async def _disable(self, definition: DestinationDefinition, reason: str) -> None:
        """The receiver says the endpoint is gone for good (410): stop sending to it, and
        alert. Its queued deliveries stay queued until an operator enables it again."""
        log.error(
            "destination %s answered %s; it is now disabled (enable it again with"
            " PUT /v1/destinations/%s once the endpoint is fixed)",
            definition.name,
            reason,
            definition.name,
        )
        # shielded: disabling cancels this destination's worker, and with it this attempt
        await asyncio.shield(self._destinations.disable(definition.name))

    async def _send(
        self, definition: DestinationDefinition, delivery: Delivery, now: datetime
    ) -> OutboundResponse:
        # the same on every attempt and replay: receivers deduplicate on either
        headers = {"content-type": "application/json", "idempotency-key": delivery.webhook_id}
        if definition.type == "webhook" and definition.secret:
            headers.update(sign(definition.secret, delivery.webhook_id, now, delivery.payload))
        return await self._client.post(definition.url, delivery.payload, headers)
