"""``relevo bench segments``: processing with 100 segments and 30 computed traits, and the time
from an event's 2xx to the webhook it causes.

Two measurements, each bounded in time and count, all on 127.0.0.1:

1. **Throughput.** The processor in this process, pinned (with every thread it starts) to one
   CPU, over a store whose definitions directory holds 100 segments and the 30 computed traits
   of ``bench.computed``. ``events`` realistic events (``bench._workload``: pages, product views,
   carts, orders, identifies, over ``profiles`` people) are appended through the collect service
   first; then ``processor.run_once()`` is timed until the log is caught up. Reported: events/s
   (wall and CPU), segment changes, and the same run without any definitions (the baseline: what
   segments and computed traits cost per event). Bar: 10,000 events/s on one core.
2. **Event to webhook.** A real ``relevo serve`` (pinned to CPU 0) with the same definitions and
   a webhook destination subscribed to one of the segments; a local receiver (this process,
   CPU 1). ``identify`` calls at ``rate`` per second flip a probe person's ``plan`` in and out
   of that segment, so each one causes a Segment Entered or Exited; the latency is from the
   call's 2xx to the webhook's arrival, matched by the event's messageId (the ``cause``).

Results are printed as a table and written as JSON to ``out``.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import yaml

from bench import _pyspy
from bench._measure import (
    cpu_times,
    cpu_usage,
    filesystem_of,
    machine,
    source_state,
    summary_ms,
)
from bench._report import header_rows
from bench._workload import CATEGORIES, PLANS, EventFactory, make_batches, population
from bench.computed import DEFINITIONS as COMPUTED_TRAITS
from bench.ingest import wait_for_quiet
from relevo._runtime import tune_for_server
from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.segments.model import compile_segment, parse_definition
from relevo.services import build_services
from relevo.store.base import Store
from relevo.testing.receiver import WebhookReceiver
from relevo.testing.server import RelevoServer

BAR_EVENTS_PER_S = 10_000
SERVER_CPU, LOAD_CPU = 0, 1
LOAD_BATCH = 500  # events per collect call while loading (not timed)
PROBE_SEGMENT = "plan-gold"
PROBE_PEOPLE = 20
PYSPY_RATE = 250
RECEIVE_TIMEOUT = 10.0


def segment_rules() -> list[dict[str, str]]:
    """100 segments a shop might define: traits, computed traits, both, and profile facts."""
    rules: list[tuple[str, str]] = []
    for plan in PLANS:
        rules.append((f"plan-{plan}", f'traits.plan == "{plan}"'))
        for category in CATEGORIES:
            rules.append(
                (
                    f"{plan}-likes-{category}",
                    f'traits.plan == "{plan}" and traits.favourite_category == "{category}"',
                )
            )
    for category in CATEGORIES:
        rules.append((f"browses-{category}", f'computed.favorite_category_90d == "{category}"'))
        rules.append(
            (
                f"hot-{category}",
                f'computed.favorite_category_90d == "{category}" and computed.views_24h >= 5',
            )
        )
    for n in (1, 2, 3, 5, 8):
        rules.append((f"orders-30d-{n}", f"computed.orders_30d >= {n}"))
        rules.append((f"views-7d-{n * 3}", f"computed.views_7d >= {n * 3}"))
        rules.append((f"products-7d-{n * 2}", f"computed.distinct_products_7d >= {n * 2}"))
        rules.append((f"carts-30d-{n}", f"computed.added_30d >= {n}"))
        rules.append((f"searches-24h-{n}", f"computed.searches_24h >= {n}"))
    for amount in (50, 100, 250, 500, 1000):
        rules.append((f"revenue-{amount}", f"computed.revenue_lifetime >= {amount}"))
        rules.append((f"cart-value-{amount}", f"computed.added_value_30d >= {amount}"))
    for n in (1, 5, 20):
        rules.append((f"pages-7d-{n}", f"computed.pages_7d >= {n}"))
    rules += [
        ("high-intent", "computed.checkouts_30m >= 1 and computed.orders_30d == 0"),
        ("lapsing-vip", 'traits.plan == "gold" and computed.days_since_last_order > 30'),
        ("big-spender", "computed.aov >= 150 and computed.orders_lifetime >= 2"),
        ("window-shopper", "computed.views_7d >= 10 and computed.orders_lifetime == 0"),
        ("searcher", "computed.top_search_30d is not null and computed.searches_24h >= 2"),
        ("premium-buyer", "computed.premium_orders >= 1"),
        ("binge-viewer", "computed.views_1h >= 3"),
        ("usd-buyer", "computed.usd_orders_90d >= 1"),
        ("cart-abandoner", "computed.added_30d >= 1 and computed.orders_30d == 0"),
        ("single-order", "computed.orders_lifetime == 1"),
        ("repeat-buyer", "computed.orders_lifetime >= 3"),
        ("new-customer", "computed.first_order is not null and computed.orders_lifetime <= 1"),
        ("campaign-google", 'computed.first_campaign == "google"'),
        ("has-email", "traits.email is not null"),
        ("named", 'traits.first_name is not null and traits.plan != "free"'),
        ("active-7d", "profile.last_seen >= now() - days(7)"),
        ("engaged", "profile.events_applied >= 50"),
        ("gold-or-plus", 'traits.plan in ["gold", "plus"]'),
        ("running-fan", 'traits.favourite_category == "running"'
                        ' or computed.favorite_category_90d == "running"'),
    ]  # fmt: skip
    names = [name for name, _ in rules]
    assert len(names) == len(set(names)) == 100, (len(names), len(set(names)))
    return [{"name": name, "rule": rule} for name, rule in rules]


def write_definitions(directory: Path) -> Path:
    """A definitions directory: ``segments/bench.yaml`` and ``computed_traits.yaml``."""
    (directory / "segments").mkdir(parents=True, exist_ok=True)
    segments = segment_rules()
    for item in segments:  # refuse a bad rule here, with its name, not in the server
        compile_segment(parse_definition(item, item["name"]))
    (directory / "segments" / "bench.yaml").write_text(yaml.safe_dump({"segments": segments}))
    (directory / "computed_traits.yaml").write_text(
        yaml.safe_dump({"computed_traits": COMPUTED_TRAITS})
    )
    return directory


@contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """Pin this thread (and the threads it starts from now on) to ``cpu``."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpu_for(wanted: int) -> int | None:
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return wanted if wanted in available and len(available) > 1 else None


# -- 1. throughput ------------------------------------------------------------------------------


def _count_profiles(store: Store) -> int:
    count, after = 0, None
    while page := store.profile_ids(after, 10_000):
        count += len(page)
        after = page[-1]
    return count


async def _load(collect: Any, bodies: list[bytes], write_key: str) -> int:
    accepted = 0
    for body in bodies:
        result = await collect.collect(CollectRequest(body, None, basic_user=write_key))
        accepted += result.accepted
    return accepted


def throughput(
    directory: Path,
    bodies: list[bytes],
    events: int,
    definitions: Path | None,
    cpu: int | None,
    profile_dir: Path | None,
    label: str,
) -> dict[str, Any]:
    """Append ``bodies`` through collect, then time the processor until it caught up."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        store_url=f"sqlite:///{directory / 'relevo.db'}",
        definitions_dir=str(definitions) if definitions else None,
        log_sync=False,  # loading is not measured; the processor reads the same either way
        max_pending_events=max(events * 2, 100_000),
    )
    with _pinned(cpu):
        services = build_services(settings)
        try:
            services.start(process=False)
            key = services.keys.create("write").secret
            accepted = asyncio.run(_load(services.collect, bodies, key))
            processor = services.processor
            processor.load()
            while processor.run_backfill():  # new definitions over no profiles: nothing to do
                pass
            tune_for_server()  # as `relevo serve` does
            recording = (
                _pyspy.Recording(
                    os.getpid(), profile_dir / f"throughput-{label}.pyspy.txt", PYSPY_RATE, None
                )
                if profile_dir is not None
                else None
            )
            if recording is not None:
                time.sleep(1.0)  # py-spy attaches
            cycles = applied = 0
            machine_before = cpu_times()
            cpu_before, started = time.process_time(), time.perf_counter()
            while not processor.caught_up():
                applied += processor.run_once()
                cycles += 1
            wall = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_before
            cpus = cpu_usage(machine_before, cpu_times())
            if recording is not None:
                recording.stop()
            registry = services.metrics.registry
            changes = {
                kind: registry.get_sample_value("relevo_segment_changes_total", {"change": kind})
                or 0.0
                for kind in ("entered", "exited")
            }
            profiles = _count_profiles(services.store)
        finally:
            services.close()
            gc.unfreeze()
    result: dict[str, Any] = {
        "label": label,
        "definitions": {
            "segments": len(segment_rules()) if definitions else 0,
            "computed_traits": len(COMPUTED_TRAITS) if definitions else 0,
        },
        "events": applied,
        "accepted": accepted,
        "cycles": cycles,
        "seconds": round(wall, 3),
        "events_per_s": round(applied / wall, 1) if wall else 0.0,
        "cpu_seconds": round(cpu_seconds, 3),
        "cpu_us_per_event": round(cpu_seconds / max(applied, 1) * 1e6, 2),
        "cpu_busy": round(cpu_seconds / wall, 3) if wall else 0.0,
        "segment_changes": changes,
        "profiles": profiles,
        "pinned_cpu": cpu,
        "cpus": cpus,
        # busy time on our CPU that was not this process: another tenant's work
        "foreign_busy_on_our_cpu": (
            round(max(0.0, cpus[f"cpu{cpu}"]["busy"] - cpu_seconds / wall), 3)
            if cpu is not None and f"cpu{cpu}" in cpus and wall
            else None
        ),
    }
    if recording is not None:
        stacks = _pyspy.read_stacks(recording.out, {})
        result["profile"] = {
            "file": str(recording.out),
            **_pyspy.summarise(stacks, recording.rate, applied, wall),
        }
    return result


# -- 2. event to webhook ------------------------------------------------------------------------


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def latency(
    directory: Path, definitions: Path, count: int, rate: float, server_cpu: int | None
) -> dict[str, Any]:
    """``count`` identifies at ``rate``/s, each flipping a person in or out of a segment."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {
        "RELEVO_CONFIG": str(directory / "none.toml"),
        "RELEVO_DEFINITIONS_DIR": str(definitions),
        "RELEVO_OUTBOUND_ALLOW_HOSTS": '["127.0.0.1"]',
    }
    server = RelevoServer(directory, env=env, cpu=server_cpu)
    write_key = server.create_key("write")
    admin_key = server.create_key("admin")
    acked: dict[str, float] = {}
    with WebhookReceiver() as receiver:
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                created = http.post(
                    "/v1/destinations",
                    json={
                        "name": "bench",
                        "type": "webhook",
                        "url": receiver.url("/bench"),
                        "segments": [PROBE_SEGMENT],
                    },
                    headers={"Authorization": f"Bearer {admin_key}"},
                )
                created.raise_for_status()
                people = [f"probe-{n}-{uuid.uuid4().hex[:8]}" for n in range(PROBE_PEOPLE)]
                plans = dict.fromkeys(people, "free")
                auth = {"Authorization": _basic(write_key), "Content-Type": "application/json"}
                warmup = PROBE_PEOPLE  # each person enters once before measuring
                interval = 1.0 / rate
                next_at = time.perf_counter()
                for n, person in zip(range(warmup + count), itertools.cycle(people), strict=False):
                    plans[person] = "gold" if plans[person] != "gold" else "free"
                    message_id = str(uuid.uuid4())
                    body = msgspec.json.encode(
                        {
                            "userId": person,
                            "messageId": message_id,
                            "traits": {"plan": plans[person]},
                        }
                    )
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    response = http.post("/v1/identify", content=body, headers=auth)
                    done = time.monotonic()
                    response.raise_for_status()
                    if n >= warmup:
                        acked[message_id] = done
                    next_at += interval
                receiver.wait_for(
                    lambda seen: len(seen) >= warmup + count,
                    RECEIVE_TIMEOUT,
                    "every webhook",
                )
        finally:
            server.stop()
        seen = receiver.seen()
    arrived = {r.json()["cause"]: r.at for r in seen if r.path == "/bench"}
    latencies = [arrived[m] - at for m, at in acked.items() if m in arrived]
    return {
        "events": count,
        "rate_per_s": rate,
        "webhooks": len(seen),
        "lost": sum(1 for m in acked if m not in arrived),
        "latency": summary_ms(latencies),
        "server_cpu": server_cpu,
    }


# -- the run ------------------------------------------------------------------------------------


def run(
    *,
    events: int = 100_000,
    profiles: int = 10_000,
    seed: int = 1,
    out: str = "bench/results/segments.json",
    latency_events: int = 500,
    rate: float = 50.0,
    baseline: bool = True,
    profile_dir: str | None = None,
    directory: str | None = None,
    quiet_wait: float = 60.0,
) -> dict[str, Any]:
    workdir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="relevo-bench-"))
    profile_path = Path(profile_dir) if profile_dir else None
    if profile_path is not None:
        profile_path.mkdir(parents=True, exist_ok=True)
        if _pyspy.py_spy() is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
    try:
        definitions = write_definitions(workdir / "definitions")
        factory = EventFactory(population(profiles, seed), seed, stream=1)
        batches = make_batches(factory, events, LOAD_BATCH)
        cpu = _cpu_for(SERVER_CPU)
        quiet = wait_for_quiet(quiet_wait)
        runs = [
            throughput(
                workdir / "with-definitions",
                batches.bodies,
                events,
                definitions,
                cpu,
                profile_path,
                "segments",
            )
        ]
        if baseline:
            runs.append(
                throughput(
                    workdir / "baseline",
                    batches.bodies,
                    events,
                    None,
                    cpu,
                    profile_path,
                    "baseline",
                )
            )
        with _pinned(_cpu_for(LOAD_CPU)):
            to_webhook = (
                latency(workdir / "latency", definitions, latency_events, rate, cpu)
                if latency_events
                else None
            )
        results: dict[str, Any] = {
            "benchmark": "segments",
            "command": shlex.join(["relevo", "bench", "segments", *sys.argv[3:]]),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "quiet_before_start": quiet,
            "filesystem": filesystem_of(workdir),
            "source": source_state(Path(__file__).resolve().parent.parent),
            "workload": {
                "events": events,
                "profiles": profiles,
                "seed": seed,
                "event_bytes_mean": round(batches.event_bytes_mean, 1),
                "segments": len(segment_rules()),
                "computed_traits": len(COMPUTED_TRAITS),
            },
            "throughput": runs[0],
            "baseline": runs[1] if baseline else None,
            "event_to_webhook": to_webhook,
            "bar": {
                "events_per_s_min": BAR_EVENTS_PER_S,
                "met": runs[0]["events_per_s"] >= BAR_EVENTS_PER_S,
            },
        }
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(msgspec.json.format(msgspec.json.encode(results)) + b"\n")
        print_table(results)
        print(f"\nwrote {path}")
        return results
    finally:
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)


def print_table(results: dict[str, Any]) -> None:
    w = results["workload"]
    rows: list[tuple[str, str]] = [
        *header_rows(results),
        (
            "workload",
            f"{w['events']:,} events, {w['profiles']:,} people, "
            f"{w['event_bytes_mean']:.0f} B/event; {w['segments']} segments, "
            f"{w['computed_traits']} computed traits",
        ),
    ]
    for run_ in (results["throughput"], results["baseline"]):
        if run_ is None:
            continue
        d = run_["definitions"]
        changes = run_["segment_changes"]
        rows.append(
            (
                f"processor, {d['segments']} segments + {d['computed_traits']} traits",
                f"{run_['events_per_s']:,.0f} events/s ({run_['cpu_us_per_event']:.1f} us CPU "
                f"per event, CPU {run_['pinned_cpu']} busy {run_['cpu_busy']:.0%}, not ours "
                f"{run_['foreign_busy_on_our_cpu'] or 0:.0%}); "
                f"{changes['entered']:,.0f} entered, {changes['exited']:,.0f} exited",
            )
        )
    if results["baseline"] is not None:
        extra = results["throughput"]["cpu_us_per_event"] - results["baseline"]["cpu_us_per_event"]
        rows.append(("cost of the definitions", f"{extra:.1f} us CPU per event"))
    hook = results["event_to_webhook"]
    if hook is not None:
        lat = hook["latency"]
        rows.append(
            (
                "event 2xx -> webhook",
                f"p50 {lat.get('p50_ms', 0):.1f} / p99 {lat.get('p99_ms', 0):.1f} / max "
                f"{lat.get('max_ms', 0):.1f} ms over {lat.get('count', 0)} events at "
                f"{hook['rate_per_s']:g}/s ({hook['lost']} lost)",
            )
        )
    bar = results["bar"]
    rows.append(
        (
            "bar",
            f">= {bar['events_per_s_min']:,} events/s on one core: "
            f"{'met' if bar['met'] else 'NOT met'}",
        )
    )
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for run_ in (results["throughput"], results["baseline"]):
        if run_ is not None and "profile" in run_:
            print(f"\n{run_['label']}: Python holding the GIL (py-spy, us per event)")
            for thread, found in run_["profile"]["threads"].items():
                print(f"  {thread} {found['gil_us_per_event']:.1f}:")
                for row in found["inclusive"][:20]:
                    print(f"    {row['us_per_event']:7.2f}  {row['share']:6.1%}  {row['function']}")
