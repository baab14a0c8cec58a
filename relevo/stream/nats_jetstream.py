"""The event log on NATS JetStream (``RELEVO_STREAM_URL=nats://host:port?stream=RELEVO_EVENTS``).

Layout: one stream (file storage, created when missing; ``?replicas=3`` on a cluster) capturing
``<prefix>.p.<n>``, one subject per partition (``?prefix=``, default: the stream name). Each
message carries the profile key in a ``Relevo-Key`` header (percent-encoded), for erasure.

Offsets are stream sequence numbers: strictly increasing within a partition but **not dense**
(the partitions share one sequence). JetStream never reuses a sequence number, even after a
message is deleted, so an offset a consumer committed is never handed out again (unless the
stream itself is deleted and recreated: do not).

Append publishes the whole batch without waiting in between (each message with a reply subject
under one inbox that collects the PubAcks) and returns once every message has its PubAck; it
fails after the timeout (5 s) or on any negative answer, and a retry is then deduplicated.
Dedup is JetStream's own: ``Nats-Msg-Id`` is ``<source>:<messageId>`` (both percent-encoded)
and the stream's ``duplicate_window`` is the configured dedup window. Limits of that window: the
server keeps every id of the window in memory (roughly 100 bytes each), rebuilds that map from
the stored messages when it restarts (an erased message's id is then forgotten), and measures
the window on the server's clock from the first copy. A duplicate's PubAck names the first
copy's sequence, so a conflict costs one direct get of that copy, only for duplicates; it is
compared with the injected ``same_payload`` (an erased first copy is not compared, so no
conflict is claimed).

Durability: a PubAck means the stream has stored the message (on a quorum of replicas for
R3). On one server (R1), JetStream fsyncs only every ``sync_interval`` (2 minutes by default):
acknowledged messages are in the OS's file buffers, so a crash of ``nats-server`` alone should
not lose them, but a power cut or kernel crash can lose up to that interval. Run R1 with
``sync_interval: always`` in the server's ``jetstream`` block (nats-server 2.10+) for a PubAck
that survives a power cut, or R3. Relevo cannot read that setting over the client protocol, so
it cannot warn about it.

Threads: nats-py is asyncio-only, while the port's ``read``/``end_offsets``/``wait`` are
synchronous (the processor thread) and ``append``/``erase_keys`` are coroutines on the web
event loop. One client lives on its own event loop in a background thread; every call is
handed to that loop (``run_coroutine_threadsafe``), so no client is ever shared between loops.
The first connection must succeed within the timeout; after that the client reconnects for as
long as it takes (appends fail after their timeout meanwhile).

Reading uses one ephemeral pull consumer per partition (filtered on its subject, no acks,
memory storage), created at ``after + 1`` and kept while the reader asks for what follows what
it last got; ``read`` then costs one no-wait pull request. A read from anywhere else replaces the
consumer. ``wait`` subscribes to the partition subjects, checks the ends, and sleeps until a
message is published or the timeout passes. ``erase_keys`` scans the key's partition with a
headers-only consumer and deletes (JetStream overwrites) each message of the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from relevo.errors import BackendError
from relevo.events.keys import partition_of
from relevo.stream.base import Append, AppendOutcome, Record, StreamCapabilities

log = logging.getLogger(__name__)

DEFAULT_STREAM = "RELEVO_EVENTS"
KEY_HEADER = "Relevo-Key"
CONSUMER_IDLE_SECONDS = 300.0  # the server deletes a consumer unused for this long
REUSE_IDLE_SECONDS = CONSUMER_IDLE_SECONDS / 2
SCAN_BATCH = 1000
T = TypeVar("T")


class _LoopThread:
    """An event loop running in its own thread, and the two ways to hand it a coroutine."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait for it (from any other thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from another loop; cancelling the caller
        does not cancel the work."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.shield(asyncio.wrap_future(future))

    def close(self) -> None:
        """Cancel what still runs there, then stop the loop and its thread."""

        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(cancel_the_rest(), 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


class _PubAck(msgspec.Struct):
    """JetStream's answer to a publish (only the fields the log reads)."""

    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None
    status: str | None = None  # a status-only answer, e.g. 503: no stream for the subject

    def failure(self) -> str | None:
        if self.error is not None:
            return str(self.error.get("description") or self.error)
        if self.status is not None or not self.seq:
            return f"status {self.status or 'without a sequence'}"
        return None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class _Batch:
    """The PubAcks of one append, filled in as they arrive."""

    def __init__(self, id_: str, size: int) -> None:
        self.id = id_
        self.acks: list[_PubAck | None] = [None] * size
        self._missing = size
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def acked(self, index: int, ack: _PubAck) -> None:
        if self.acks[index] is None:
            self.acks[index] = ack
            self._missing -= 1
            if not self._missing and not self.done.done():
                self.done.set_result(None)


@dataclass
class _Cursor:
    """A partition's pull consumer: ``position`` is the last sequence it delivered."""

    consumer: str
    position: int
    subscription: Subscription
    inbox: str
    arrived: asyncio.Queue[Msg] = field(default_factory=asyncio.Queue)
    used_at: float = field(default_factory=time.monotonic)

    def fresh(self, after: int) -> bool:
        """Whether it continues at ``after`` and the server has surely not dropped it idle."""
        return self.position == after and time.monotonic() - self.used_at < REUSE_IDLE_SECONDS


def msg_id(item: Append) -> str:
    return f"{quote(item.source, safe='')}:{quote(item.message_id, safe='')}"


def stream_sequence(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject, in either layout:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or, with a
    domain and account hash after ``$JS.ACK``, two tokens further on."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


def _status(msg: Msg) -> str | None:
    return msg.headers.get("Status") if msg.headers else None


async def _log_error(error: Exception) -> None:
    log.warning("NATS client error: %r", error)


async def _log_reconnected() -> None:
    log.warning("reconnected to NATS")


class _ConsumerGone(BackendError):
    """The pull consumer no longer exists (the server dropped it after idling)."""


class JetStreamLog:
    """``nats://host:port`` with options ``stream``, ``prefix`` and ``replicas``."""

    capabilities: ClassVar[StreamCapabilities] = StreamCapabilities(
        shared_between_processes=True, deduplicates=True
    )

    def __init__(
        self,
        url: str,
        *,
        partitions: int,
        dedup_window_seconds: float,
        same_payload: Callable[[bytes, bytes], bool] = bytes.__eq__,
        stream: str = DEFAULT_STREAM,
        prefix: str | None = None,
        replicas: int = 1,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.name = f"nats:{stream}"
        self.partitions = partitions
        self.stream = stream
        self.prefix = prefix or stream
        self._url = url
        self._window = float(dedup_window_seconds)
        self._same_payload = same_payload
        self._replicas = replicas
        self._timeout = timeout_seconds
        self._subjects = [f"{self.prefix}.p.{p}" for p in range(partitions)]
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}"
        self._cursors: dict[int, _Cursor] = {}
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._nc: Client | None = None
        self._jsc: JetStreamContext | None = None
        self._ack_prefix = ""
        self._batches: dict[str, _Batch] = {}
        self._batch_number = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = _LoopThread("relevo-nats-log")
        try:
            self._loop.run(self._connect(), self._timeout * 3)
        except BaseException:
            self.close()
            raise

    async def _connect(self) -> None:
        self._nc = Client()
        try:
            # the first connection has to work within the timeout; once connected, the client
            # reconnects for as long as it takes (publishes wait in its buffer meanwhile)
            await asyncio.wait_for(
                self._nc.connect(
                    self._url,
                    name="relevo-event-log",
                    connect_timeout=max(1, round(self._timeout)),
                    max_reconnect_attempts=-1,
                    error_cb=_log_error,
                    disconnected_cb=self._log_disconnected,
                    reconnected_cb=_log_reconnected,
                ),
                self._timeout,
            )
            self._jsc = self._nc.jetstream(timeout=self._timeout)
            self._ack_prefix = f"{self._nc.new_inbox()}."
            await self._nc.subscribe(f"{self._ack_prefix}*", cb=self._on_ack)
            await self._ensure_stream()
        except (NatsError, OSError, TimeoutError) as exc:
            raise BackendError(f"the NATS event log is unavailable: {exc!r}") from exc

    async def _log_disconnected(self) -> None:
        if self._loop is not None:  # not closing
            log.warning("disconnected from NATS; reconnecting")

    async def _ensure_stream(self) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.p.*"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            duplicate_window=self._window,
            num_replicas=self._replicas,
            allow_direct=True,
        )
        js = self._js()
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(config)
            return
        current = info.config
        subjects = current.subjects or []
        if (
            current.duplicate_window != self._window
            or f"{self.prefix}.p.*" not in subjects
            or not current.allow_direct
        ):
            log.info("updating JetStream stream %s to the event log's settings", self.stream)
            await js.update_stream(
                current.evolve(
                    subjects=[*subjects, *(s for s in config.subjects or [] if s not in subjects)],
                    duplicate_window=self._window,
                    allow_direct=True,
                )
            )

    async def _disconnect(self) -> None:
        for cursor in list(self._cursors.values()):
            await self._drop(cursor)
        self._cursors.clear()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self._disconnect(), self._timeout * 2)
        except Exception:  # closing: the server may be gone; the loop still has to stop
            log.warning("closing the NATS event log failed", exc_info=True)
        finally:
            loop.close()

    def _client(self) -> Client:
        if self._nc is None:
            raise BackendError("the NATS event log is not started")
        return self._nc

    def _js(self) -> JetStreamContext:
        if self._jsc is None:
            raise BackendError("the NATS event log is not started")
        return self._jsc

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop from a synchronous caller."""
        if self._loop is None:
            coro.close()
            raise BackendError("the NATS event log is not started")
        try:
            return self._loop.run(coro, self._timeout * 3)
        except (NatsError, TimeoutError) as exc:
            raise BackendError(f"the NATS event log failed: {exc!r}") from exc

    async def _async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop from another event loop."""
        if self._loop is None:
            coro.close()
            raise BackendError("the NATS event log is not started")
        try:
            return await self._loop.call(coro)
        except (NatsError, TimeoutError) as exc:
            raise BackendError(f"the NATS event log failed: {exc!r}") from exc

    # -- writing ------------------------------------------------------------------------------

    async def append(self, items: list[Append]) -> AppendOutcome:
        if not items:
            return AppendOutcome(0, 0, 0)
        with self._pending_lock:
            self._pending += len(items)
        try:
            return await self._async(self._publish(items))
        finally:
            with self._pending_lock:
                self._pending -= len(items)

    def pending(self) -> int:
        return self._pending

    async def _publish(self, items: list[Append]) -> AppendOutcome:
        nc = self._client()
        self._batch_number += 1
        batch = _Batch(str(self._batch_number), len(items))
        self._batches[batch.id] = batch
        try:
            for index, item in enumerate(items):
                headers = {KEY_HEADER: quote(item.key, safe="")}
                if item.dedupe:
                    headers["Nats-Msg-Id"] = msg_id(item)
                await nc.publish(
                    self._subjects[item.partition],
                    item.payload,
                    reply=f"{self._ack_prefix}{batch.id}-{index}",
                    headers=headers,
                )
            await asyncio.wait_for(asyncio.shield(batch.done), self._timeout)
        finally:
            del self._batches[batch.id]
        failed = [f for f in (a.failure() if a else "no ack" for a in batch.acks) if f]
        if failed:
            raise BackendError(f"JetStream did not store the batch: {failed[0]}")
        duplicates = [
            (item, ack.seq)
            for item, ack in zip(items, batch.acks, strict=True)
            if ack is not None and ack.duplicate
        ]
        firsts = await asyncio.gather(*(self._payload_at(seq) for _, seq in duplicates))
        conflicts = sum(
            1
            for (item, _), first in zip(duplicates, firsts, strict=True)
            if first is not None and not self._same_payload(first, item.payload)
        )
        return AppendOutcome(len(items) - len(duplicates), len(duplicates), conflicts)

    async def _on_ack(self, msg: Msg) -> None:
        batch_id, _, index = msg.subject[len(self._ack_prefix) :].partition("-")
        batch = self._batches.get(batch_id)
        if batch is None:  # an ack after its batch timed out
            return
        status = _status(msg)
        try:
            ack = _ack_decoder.decode(msg.data) if msg.data else _PubAck(status=status)
        except msgspec.DecodeError:
            ack = _PubAck(status=f"undecodable ack {msg.data[:100]!r}")
        batch.acked(int(index), ack)

    async def _payload_at(self, seq: int | None) -> bytes | None:
        """The payload of the message at ``seq``, or None once it is deleted."""
        if not seq:
            return None
        js = self._js()
        try:
            msg = await js.get_msg(self.stream, seq=seq, direct=True)
        except NotFoundError:
            return None
        return msg.data or b""

    async def erase_keys(self, keys: list[str]) -> int:
        if not keys:
            return 0
        return await self._async(self._erase(keys))

    async def _erase(self, keys: list[str]) -> int:
        by_partition: dict[int, set[str]] = {}
        for key in keys:
            by_partition.setdefault(partition_of(key, self.partitions), set()).add(
                quote(key, safe="")
            )
        js = self._js()
        erased = 0
        for partition, wanted in by_partition.items():
            cursor = await self._open(partition, 0, headers_only=True)
            try:
                doomed: list[int] = []
                while True:
                    msgs = await self._pull(cursor, SCAN_BATCH)
                    doomed += [
                        stream_sequence(msg.reply)
                        for msg in msgs
                        if msg.headers and msg.headers.get(KEY_HEADER) in wanted
                    ]
                    if len(msgs) < SCAN_BATCH:
                        break
            finally:
                await self._drop(cursor)
            results = await asyncio.gather(*(js.delete_msg(self.stream, seq) for seq in doomed))
            erased += sum(1 for deleted in results if deleted)
        return erased

    # -- reading ------------------------------------------------------------------------------

    def read(self, partition: int, after: int, limit: int) -> list[Record]:
        return self._sync(self._read(partition, after, limit))

    async def _read(self, partition: int, after: int, limit: int) -> list[Record]:
        for attempt in range(2):
            cursor = self._cursors.get(partition)
            if cursor is None or not cursor.fresh(after):
                if cursor is not None:
                    await self._drop(cursor)
                cursor = self._cursors[partition] = await self._open(partition, after)
            try:
                msgs = await self._pull(cursor, limit)
                break
            except BaseException as exc:
                # where the consumer stands is unknown now: the next read starts a new one (a
                # consumer deleted behind our back makes the pull time out: no one answers)
                del self._cursors[partition]
                await self._drop(cursor)
                if not isinstance(exc, _ConsumerGone) or attempt:
                    raise
        records = [Record(partition, stream_sequence(msg.reply), msg.data) for msg in msgs]
        return [r for r in records if r.offset > after]

    async def _open(self, partition: int, after: int, *, headers_only: bool = False) -> _Cursor:
        nc = self._client()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            filter_subject=self._subjects[partition],
            ack_policy=AckPolicy.NONE,
            inactive_threshold=CONSUMER_IDLE_SECONDS,
            mem_storage=True,
            num_replicas=1,
            headers_only=headers_only or None,
        )
        info = await self._js().add_consumer(self.stream, config)
        inbox = nc.new_inbox()
        arrived: asyncio.Queue[Msg] = asyncio.Queue()

        async def arrive(msg: Msg) -> None:
            arrived.put_nowait(msg)

        subscription = await nc.subscribe(inbox, cb=arrive)
        return _Cursor(info.name, after, subscription, inbox, arrived)

    async def _drop(self, cursor: _Cursor) -> None:
        try:
            await cursor.subscription.unsubscribe()
            await self._js().delete_consumer(self.stream, cursor.consumer)
        except (NatsError, TimeoutError):  # it goes away by itself once idle
            log.debug("could not delete consumer %s", cursor.consumer, exc_info=True)

    async def _pull(self, cursor: _Cursor, limit: int) -> list[Msg]:
        """Up to ``limit`` messages available now (a no-wait pull request)."""
        while not cursor.arrived.empty():  # the end marker of an earlier, full batch
            cursor.arrived.get_nowait()
        request = json.dumps({"batch": limit, "no_wait": True}).encode()
        await self._client().publish(f"{self._api}.{cursor.consumer}", request, reply=cursor.inbox)
        msgs: list[Msg] = []
        async with asyncio.timeout(self._timeout):
            while len(msgs) < limit:
                msg = await cursor.arrived.get()
                status = _status(msg)
                if status is None:
                    msgs.append(msg)
                elif status in ("404", "408"):  # no more messages for this request
                    break
                elif status in {"503", "409"}:  # no such consumer (any more)
                    raise _ConsumerGone(f"JetStream consumer {cursor.consumer} is gone")
                elif status != "100":  # 100: a heartbeat
                    description = msg.headers.get("Description", "") if msg.headers else ""
                    raise BackendError(f"JetStream pull failed: {status} {description}")
        if msgs:
            cursor.position = stream_sequence(msgs[-1].reply)
        cursor.used_at = time.monotonic()
        return msgs

    def end_offsets(self) -> dict[int, int]:
        return self._sync(self._ends())

    async def _ends(self) -> dict[int, int]:
        js = self._js()

        async def last(subject: str) -> int:
            try:
                msg = await js.get_last_msg(self.stream, subject, direct=True)
            except NotFoundError:
                return 0
            return msg.seq or 0

        ends = await asyncio.gather(*(last(subject) for subject in self._subjects))
        return dict(enumerate(ends))

    def wait(self, beyond: dict[int, int], timeout: float) -> None:
        published = threading.Event()

        async def on_publish(msg: Msg) -> None:
            published.set()

        subscription = self._sync(self._client().subscribe(f"{self.prefix}.p.*", cb=on_publish))
        try:
            ends = self.end_offsets()
            if any(end > beyond[p] for p, end in ends.items() if p in beyond):
                return
            published.wait(timeout)
        finally:
            self._sync(subscription.unsubscribe())
