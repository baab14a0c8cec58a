"""Sending load and watching the server: closed-loop and paced senders, ``/metrics`` samples."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from bench._http import Client, ProtocolError, RawClient, Reply, Request, basic_auth, build_request
from bench._measure import parse_metrics, summary_ms
from bench._workload import Batches

HOST = "127.0.0.1"
PROCESSED = "relevo_events_processed_total"
LAG = "relevo_processing_lag_events"
SEND_TIMEOUT = 600.0  # the most any sending phase may take
DRAIN_TIMEOUT = 300.0  # the most to wait for processing to catch up after sending
MAX_RETRIES = 50  # 429 answers retried per request


class _Report(msgspec.Struct):
    accepted: int = 0
    duplicates: int = 0


_report_decoder = msgspec.json.Decoder(_Report)


def now() -> float:
    """The benchmark's clock (monotonic, seconds)."""
    return time.perf_counter()


@dataclass
class Sent:
    """What a sending loop saw: latencies of 2xx answers, statuses, events accepted."""

    latencies: list[float] = field(default_factory=list)  # from the scheduled time
    sent_latencies: list[float] = field(default_factory=list)  # from when it was written
    statuses: Counter[int] = field(default_factory=Counter)
    events_ok: int = 0  # events in requests answered 2xx
    accepted: int = 0  # as the server reported them
    duplicates: int = 0
    throttled: int = 0  # 429 answers (retried)
    failed: int = 0  # other answers and transport errors (not retried)
    first_send: float = math.inf
    last_ack: float = 0.0

    def record(self, reply: Reply, events: int, scheduled: float, started: float) -> None:
        done = now()
        self.statuses[reply.status] += 1
        if 200 <= reply.status < 300:
            self.latencies.append(done - scheduled)
            self.sent_latencies.append(done - started)
            self.events_ok += events
            report = _report_decoder.decode(reply.body)
            self.accepted += report.accepted
            self.duplicates += report.duplicates
            self.last_ack = max(self.last_ack, done)
        else:
            self.failed += 1

    def as_dict(self, wall: float) -> dict[str, Any]:
        return {
            "requests_ok": len(self.latencies),
            "events_ok": self.events_ok,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "throttled_429": self.throttled,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "requests_per_s": round(len(self.latencies) / wall, 1) if wall > 0 else 0.0,
            "events_per_s": round(self.events_ok / wall, 1) if wall > 0 else 0.0,
            "latency": summary_ms(self.latencies),
            # without the load generator's own lateness in sending (its timer granularity)
            "latency_from_send": summary_ms(self.sent_latencies),
        }


async def _send(
    client: Client, request: Request, events: int, sent: Sent, scheduled: float
) -> None:
    """One request, retried on 429 (honouring Retry-After up to a second)."""
    for _ in range(MAX_RETRIES):
        started = now()
        sent.first_send = min(sent.first_send, started)
        try:
            reply = await client.send(request)
        except (
            OSError,
            asyncio.IncompleteReadError,
            ValueError,
            ProtocolError,
            httpx.HTTPError,
        ) as exc:
            sent.failed += 1
            sent.statuses[-1] += 1
            print(f"  request failed: {exc!r}", file=sys.stderr)
            return
        if reply.status == 429:
            sent.throttled += 1
            await asyncio.sleep(min(reply.retry_after or 0.05, 1.0))
            continue
        sent.record(reply, events, scheduled, started)
        return
    sent.failed += 1


async def closed_loop(
    client: Client,
    requests: list[Request],
    counts: list[int],
    connections: int,
    min_seconds: float = 0.0,
) -> Sent:
    """Send every request over ``connections`` workers, each sending its next when answered;
    with ``min_seconds``, start over from the first until that much time has passed."""
    sent = Sent()
    started = now()
    deadline = started + SEND_TIMEOUT

    def order() -> Iterator[int]:
        yield from range(len(requests))
        while now() - started < min_seconds:
            yield from range(len(requests))

    pending = order()

    async def worker() -> None:
        for index in pending:
            if now() > deadline:
                return
            await _send(client, requests[index], counts[index], sent, now())

    await asyncio.gather(*(worker() for _ in range(connections)))
    return sent


async def paced(
    client: Client, requests: list[Request], counts: list[int], interval: float, until: float
) -> tuple[Sent, float, float]:
    """Send request i at ``start + i * interval`` until ``until`` (open loop: latency is counted
    from the scheduled time, so a server that falls behind shows it)."""
    sent = Sent()
    tasks: set[asyncio.Task[None]] = set()
    start = now()
    last_due = start
    for index, request in enumerate(requests):
        due = start + index * interval
        if due >= until:
            break
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        last_due = due
        task = asyncio.create_task(_send(client, request, counts[index], sent, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=SEND_TIMEOUT)
    return sent, start, last_due + interval


# -- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    port: int
    write_key: str

    def batch_requests(self, batches: Batches) -> list[Request]:
        auth = (("Authorization", basic_auth(self.write_key)),)
        return [
            build_request(HOST, self.port, "POST", "/v1/batch", b, auth) for b in batches.bodies
        ]


def batch_counts(batches: Batches, batch: int) -> list[int]:
    counts = [batch] * len(batches.bodies)
    if counts:
        counts[-1] = batches.events - batch * (len(counts) - 1)
    return counts


@dataclass
class Watch:
    """``/metrics`` sampled on its own connection: (time, processed, lag)."""

    port: int
    every: float
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        client = RawClient(HOST, self.port, 1)
        request = build_request(HOST, self.port, "GET", "/metrics")
        deadline = now() + SEND_TIMEOUT + DRAIN_TIMEOUT
        try:
            while not self.stop.is_set() and now() < deadline:
                reply = await client.send(request)
                metrics = parse_metrics(reply.body.decode())
                self.samples.append((now(), metrics.get(PROCESSED, 0.0), metrics.get(LAG, 0.0)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.every)
        finally:
            await client.aclose()

    async def reached(self, target: float, timeout: float) -> float | None:
        """When processed reached ``target`` (None on timeout): interpolated between the last
        sample below it and the first at or above it, so the poll interval costs little
        precision (the counter moves in steps of one processor cycle)."""
        deadline = now() + timeout
        checked = 0
        while now() < deadline:
            for index in range(checked, len(self.samples)):
                when, processed, _ = self.samples[index]
                if processed < target:
                    continue
                if index == 0:
                    return when
                before, done, _ = self.samples[index - 1]
                share = (target - done) / (processed - done) if processed > done else 1.0
                return before + (when - before) * share
            checked = len(self.samples)
            await asyncio.sleep(self.every / 4)
        return None


async def _get(url_port: int, path: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    client = RawClient(HOST, url_port, 1)
    try:
        return await client.send(build_request(HOST, url_port, "GET", path, headers=headers))
    finally:
        await client.aclose()


async def processed_total(port: int) -> float:
    return parse_metrics((await _get(port, "/metrics")).body.decode()).get(PROCESSED, 0.0)
