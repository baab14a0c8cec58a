"""The collect path: a tracking request in, events durably in the log, a report out.

Nothing else happens here: identity, profiles and everything downstream read the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from relevo._clock import Clock
from relevo.config import Settings
from relevo.errors import ErrorDetail, Forbidden, Overloaded, PayloadTooLarge, ValidationError
from relevo.events.keys import partition_of, profile_key
from relevo.events.model import Event, encode_event
from relevo.events.normalise import (
    BatchDefaults,
    EventRejected,
    Limits,
    decode_wire_event,
    normalise,
)
from relevo.events.timestamps import parse_timestamp
from relevo.events.wire import WireBatch, WireEvent
from relevo.keys import KeyRing
from relevo.metrics import Metrics
from relevo.ratelimit import NoLimit, RateLimiter, check_rate
from relevo.stream.base import Append, EventLog

_batch_decoder = msgspec.json.Decoder(WireBatch)


@dataclass(frozen=True)
class CollectRequest:
    body: bytes
    implied_type: str | None  # set by single-event endpoints (/v1/track, /v1/t ...)
    basic_user: str | None = None
    query_write_key: str | None = None
    origin: str | None = None


@dataclass
class CollectResult:
    received: int
    accepted: int = 0
    duplicates: int = 0
    rejected: list[ErrorDetail] = field(default_factory=list)


class CollectService:
    def __init__(
        self,
        settings: Settings,
        log: EventLog,
        keys: KeyRing,
        clock: Clock,
        metrics: Metrics,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._limiter = limiter or NoLimit()
        self._log = log
        self._keys = keys
        self._clock = clock
        self._metrics = metrics
        self._partitions = log.partitions
        self._max_pending = settings.max_pending_events
        self._max_batch = settings.max_batch_events
        self._limits = Limits(settings.max_event_bytes, settings.max_nesting_depth)

    async def collect(self, request: CollectRequest) -> CollectResult:
        """Accept a call or a batch. Raises ValidationError (nothing valid), AuthError,
        Forbidden (origin or key kind), PayloadTooLarge, Overloaded (try again later)."""
        received_at = self._clock.now()
        raws: list[msgspec.Raw | WireEvent]
        if request.implied_type is None:
            raw_events, body_key, defaults = self._decode_batch(request.body)
            raws, where = list(raw_events), "batch[{}]"
        else:
            wire = self._decode_single(request.body)
            raws, body_key, defaults, where = [wire], wire.write_key, BatchDefaults(), ""
        access = self._keys.write_access(request.basic_user or body_key or request.query_write_key)
        await check_rate(self._limiter, access.key.id)
        origins = access.source.allowed_origins
        if origins and request.origin is not None and request.origin not in origins:
            raise Forbidden(f"origin {request.origin!r} may not send to this source")

        result = CollectResult(received=len(raws))
        events: list[Event] = []
        for index, raw in enumerate(raws):
            place = where.format(index)
            try:
                wire = (
                    raw
                    if isinstance(raw, WireEvent)
                    else decode_wire_event(bytes(raw), place, self._limits)
                )
                events.append(
                    normalise(
                        wire,
                        where=place,
                        source=access.source.name,
                        received_at=received_at,
                        limits=self._limits,
                        implied_type=request.implied_type,
                        defaults=defaults,
                    )
                )
            except EventRejected as rejected:
                result.rejected.extend(rejected.details)
        if result.rejected:
            self._metrics.events_rejected.labels("invalid_event").inc(result.received - len(events))
        if not events:
            raise ValidationError(
                "no valid event in the request" if result.received else "the batch is empty",
                details=result.rejected,
            )
        if self._log.pending() + len(events) > self._max_pending:
            self._metrics.collect_throttled.inc()
            raise Overloaded("the event log is behind; retry shortly", retry_after=1)

        outcome = await self._log.append([self._append(e) for e in events])
        result.accepted = outcome.accepted
        result.duplicates = outcome.duplicates
        self._metrics.events_accepted.labels(access.source.name).inc(outcome.accepted)
        if outcome.duplicates:
            self._metrics.events_duplicate.inc(outcome.duplicates)
        if outcome.conflicts:
            self._metrics.events_duplicate_conflict.inc(outcome.conflicts)
        return result

    def _append(self, event: Event) -> Append:
        return append_of(event, self._partitions)

    def _decode_batch(self, body: bytes) -> tuple[list[msgspec.Raw], str | None, BatchDefaults]:
        try:
            batch = _batch_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationError(
                f"not a batch: {exc}", details=[ErrorDetail("$", str(exc), "invalid_type")]
            ) from exc
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationError(f"the body is not valid JSON: {exc}") from exc
        if len(batch.batch) > self._max_batch:
            raise PayloadTooLarge(
                f"the batch has {len(batch.batch)} events, over the limit of {self._max_batch}"
            )
        sent_at = None
        if batch.sent_at is not None:
            try:
                sent_at = parse_timestamp(batch.sent_at)
            except ValueError as exc:
                raise ValidationError(
                    "sentAt is not an ISO-8601 date-time",
                    details=[ErrorDetail("sentAt", str(exc), "invalid_timestamp")],
                ) from exc
        return (
            batch.batch,
            batch.write_key,
            BatchDefaults(sent_at, batch.context, batch.integrations),
        )

    def _decode_single(self, body: bytes) -> WireEvent:
        try:
            return decode_wire_event(body, "", self._limits)
        except EventRejected as rejected:
            detail = rejected.details[0]
            if detail.code == "event_too_large":
                raise PayloadTooLarge(detail.message, details=rejected.details) from rejected
            raise ValidationError(str(rejected), details=rejected.details) from rejected


def append_of(event: Event, partitions: int) -> Append:
    """What the event log stores of a normalised event: its profile key and partition, its
    dedup identity (a server-minted messageId is not one) and its encoding."""
    key = profile_key(event)
    return Append(
        key=key,
        partition=partition_of(key, partitions),
        source=event.source,
        message_id=event.message_id,
        dedupe=not event.message_id_minted,
        payload=encode_event(event),
    )
