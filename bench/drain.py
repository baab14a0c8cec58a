"""``relevo bench drain``: how fast 1 and 2 workers drain a pre-filled event stream.

Scale-out on real engines, all on 127.0.0.1: the state in PostgreSQL (a fresh schema per run),
the event log on Redis Streams or NATS JetStream. ``events`` realistic events (``bench._workload``:
pages, product views, carts, orders, identifies over ``profiles`` people) are collected first
through the collect service into the stream; then, for each worker count, a fresh schema (all
offsets at 0), ``relevo worker`` processes are started and the time from the first committed
offset to the last event applied is measured (worker start-up excluded). Bar: 2 workers drain
at least 1.3 times as fast as 1 on this machine's 2 cores (which PostgreSQL and the broker
share with the workers). With ``--profile DIR`` each worker is recorded with py-spy.

Results are printed as a table and written as JSON to ``out``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from bench import _pyspy
from bench._engines import POSTGRES, create_schema, drop_schema, store_url, stream_url
from bench._measure import machine, source_state
from bench._report import header_rows
from bench._workload import EventFactory, make_batches, population
from bench.ingest import wait_for_quiet
from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.services import build_services

BAR_RATIO = 1.3
LOAD_BATCH = 500
PYSPY_RATE = 97


def fill(kind: str, tag: str, events: int, profiles: int, seed: int) -> dict[str, Any]:
    """Collect ``events`` into the stream (through a throw-away schema's keys)."""
    schema = f"{tag}_fill"
    create_schema(schema)
    settings = Settings(store_url=store_url(schema), stream_url=stream_url(kind, tag))
    services = build_services(settings)
    try:
        services.log.start()
        write = services.keys.create("write", "bench").secret
        batches = make_batches(
            EventFactory(population(profiles, seed), seed, 1), events, LOAD_BATCH
        )
        started = time.perf_counter()
        accepted = 0
        for body in batches.bodies:
            result = asyncio.run(
                services.collect.collect(
                    CollectRequest(body=body, implied_type=None, basic_user=write)
                )
            )
            accepted += result.accepted
        return {
            "accepted": accepted,
            "seconds": round(time.perf_counter() - started, 2),
            "event_bytes_mean": round(batches.event_bytes_mean),
            "ends": services.log.end_offsets(),
        }
    finally:
        services.close()
        drop_schema(schema)


def _committed(schema: str) -> dict[int, int]:
    """The committed offset of each partition of the stream (offsets need not be dense:
    NATS numbers messages across partitions)."""
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT partition, "offset" FROM {schema}.offsets'
            " WHERE stream LIKE 'redis:%' OR stream LIKE 'nats:%'"
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def drain(
    kind: str,
    tag: str,
    workers: int,
    filled: dict[str, Any],
    workdir: Path,
    profile: Path | None,
) -> dict[str, Any]:
    """Time ``workers`` workers from their first commit until every partition's committed
    offset reaches the end the fill left (start-up excluded)."""
    ends: dict[int, int] = filled["ends"]
    total: int = filled["accepted"]
    schema = f"{tag}_w{workers}"
    create_schema(schema)
    env = {
        **os.environ,
        "RELEVO_CONFIG": str(workdir / "none.toml"),
        "RELEVO_STORE_URL": store_url(schema),
        "RELEVO_STREAM_URL": stream_url(kind, tag),
        "RELEVO_LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "relevo", "db", "migrate"], env=env, check=True, capture_output=True
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "relevo", "worker", "--name", f"w{n}", "--lease-seconds", "3"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"{schema}-w{n}.log").open("wb"),
        )
        for n in range(workers)
    ]
    spies = (
        [
            _pyspy.Recording(p.pid, profile / f"{kind}-{workers}w-{n}.pyspy.txt", PYSPY_RATE, None)
            for n, p in enumerate(processes)
        ]
        if profile
        else []
    )
    try:
        first_at: float | None = None
        deadline = time.perf_counter() + 900
        done = False
        while time.perf_counter() < deadline and not done:
            committed = _committed(schema)
            if committed and first_at is None:
                first_at = time.perf_counter()
            done = all(committed.get(p, 0) >= end for p, end in ends.items())
            if not done:
                time.sleep(0.05)
        seconds = time.perf_counter() - (first_at or time.perf_counter())
        return {
            "workers": workers,
            "events": total,
            "drained": done,
            "seconds": round(seconds, 2),
            "events_per_s": round(total / seconds, 1) if seconds and done else 0.0,
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        for spy in spies:
            spy.stop()
        drop_schema(schema)


def run(
    *,
    streams: list[str],
    events: int,
    profiles: int,
    seed: int,
    out: str,
    quiet_wait: float,
    profile_dir: str | None,
) -> None:
    workdir = Path(f"/tmp/relevo-bench-drain-{uuid.uuid4().hex[:8]}")
    workdir.mkdir(parents=True)
    profile = Path(profile_dir) if profile_dir else None
    if profile:
        profile.mkdir(parents=True, exist_ok=True)
    quiet = wait_for_quiet(quiet_wait)
    runs: dict[str, Any] = {}
    for kind in streams:
        tag = f"d{uuid.uuid4().hex[:8]}"
        filled = fill(kind, tag, events, profiles, seed)
        one = drain(kind, tag, 1, filled, workdir, profile)
        two = drain(kind, tag, 2, filled, workdir, profile)
        ratio = two["events_per_s"] / one["events_per_s"] if one["events_per_s"] else 0.0
        runs[kind] = {
            "fill": {k: v for k, v in filled.items() if k != "ends"},
            "one_worker": one,
            "two_workers": two,
            "ratio": round(ratio, 2),
            "bar_met": ratio >= BAR_RATIO,
        }
    results = {
        "benchmark": "drain",
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "quiet_before_start": quiet,
        "source": source_state(Path(__file__).resolve().parent.parent),
        "workload": {"events": events, "profiles": profiles, "seed": seed},
        "runs": runs,
        "bar_ratio": BAR_RATIO,
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(results)) + b"\n")
    rows = [*header_rows(results)]
    for kind, r in runs.items():
        rows.append(
            (f"{kind}: fill", f"{r['fill']['accepted']:,} events in {r['fill']['seconds']} s")
        )
        for label in ("one_worker", "two_workers"):
            d = r[label]
            rows.append(
                (
                    f"{kind}: {d['workers']} worker(s)",
                    f"{d['events_per_s']:,.0f} events/s ({d['seconds']} s)",
                )
            )
        rows.append(
            (
                f"{kind}: 2 vs 1",
                f"{r['ratio']}x (bar {BAR_RATIO}x: {'met' if r['bar_met'] else 'NOT met'})",
            )
        )
    width = max(len(n) for n, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
