"""Freshness probes: a ``track`` per probe for a dedicated user, and a poller of its profile."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from bench._http import RawClient, basic_auth, build_request
from bench._load import HOST, SEND_TIMEOUT, Target, now

PROBE_TIMEOUT = 10.0  # a probe not visible by then is counted as lost


class _Counts(msgspec.Struct):
    event_counts: dict[str, int] = {}


_counts_decoder = msgspec.json.Decoder(_Counts)


@dataclass
class Probes:
    """The probe user's outstanding probes and what was measured about them."""

    user: str
    outstanding: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: sent, ack
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sending_done: bool = False
    freshness: list[float] = field(default_factory=list)  # ack -> visible
    send_to_visible: list[float] = field(default_factory=list)  # send -> visible
    ack_latency: list[float] = field(default_factory=list)
    poll_latency: list[float] = field(default_factory=list)
    polls: int = 0
    sent: int = 0
    failed: int = 0
    lost: int = 0


async def send_probes(
    probes: Probes, target: Target, interval: float, start: float, until: float
) -> None:
    client = RawClient(HOST, target.port, 1)
    auth = (("Authorization", basic_auth(target.write_key)),)
    run_tag = f"{os.getpid()}-{int(time.time())}"
    slot = 0
    try:
        while (due := start + slot * interval) < until:
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"bench probe {slot}"
            body = msgspec.json.encode(
                {
                    "userId": probes.user,
                    "event": name,
                    "messageId": f"probe-{run_tag}-{slot}",
                    "timestamp": datetime.now(UTC).isoformat(),
                    "properties": {"slot": slot},
                }
            )
            request = build_request(HOST, target.port, "POST", "/v1/track", body, auth)
            sent_at = now()
            reply = await client.send(request)
            acked = now()
            probes.sent += 1
            if 200 <= reply.status < 300:
                probes.ack_latency.append(acked - sent_at)
                probes.outstanding[name] = (sent_at, acked)
                probes.wake.set()
            else:
                probes.failed += 1
            # a slow answer skips the slots it overran instead of sending a burst
            slot = max(slot + 1, math.ceil((now() - start) / interval))
    finally:
        probes.sending_done = True
        probes.wake.set()
        await client.aclose()


async def poll_probes(probes: Probes, target: Target, server_key: str, interval: float) -> None:
    client = RawClient(HOST, target.port, 1)
    request = build_request(
        HOST,
        target.port,
        "GET",
        f"/v1/profiles/user_id:{probes.user}",
        headers=(("Authorization", f"Bearer {server_key}"),),
    )
    deadline = now() + SEND_TIMEOUT
    try:
        while now() < deadline:
            if not probes.outstanding:
                if probes.sending_done:
                    return
                probes.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(probes.wake.wait(), 0.1)
                continue
            started = now()
            reply = await client.send(request)
            done = now()
            probes.polls += 1
            probes.poll_latency.append(done - started)
            counts = _counts_decoder.decode(reply.body).event_counts if reply.status == 200 else {}
            for name, (sent_at, acked) in list(probes.outstanding.items()):
                if acked <= started and name in counts:
                    probes.freshness.append(done - acked)
                    probes.send_to_visible.append(done - sent_at)
                    del probes.outstanding[name]
                elif done - acked > PROBE_TIMEOUT:
                    probes.lost += 1
                    del probes.outstanding[name]
            await asyncio.sleep(interval)
    finally:
        await client.aclose()
