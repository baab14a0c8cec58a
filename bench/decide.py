"""``relevo bench decide``: the cost and latency of a decision, in-process and over HTTP.

The workload: one bandit placement (linear Thompson sampling) with ``offers`` offers, each with
its own eligibility rule and a content template, features from 20 paths of the profile and the
request's context (one interaction), ``profiles`` people with traits and segments.

1. **In-process.** ``DecisionService.decide`` called ``decisions`` times in a loop (profiles
   warm in the decide cache, the decision log written by its background thread): wall time per
   call (p50/p99/mean) and the process's CPU per call. Bar: under 200 microseconds.
2. **HTTP.** A real ``relevo serve`` on CPU 0 over the same files; this process (CPU 1) sends
   ``POST /v1/decide`` at ``rate`` per second for ``seconds`` (open loop: latency counted from
   each request's scheduled time), then as fast as ``connections`` connections allow.
   Bar: p99 under 5 ms at 1,000 requests/s.

Results are printed as a table and written as JSON to ``out``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uvloop
import yaml

from bench._http import RawClient, Request, build_request
from bench._load import closed_loop, now, paced
from bench._measure import machine, source_state, summary_ms
from bench._report import header_rows
from bench.ingest import wait_for_quiet
from relevo._runtime import tune_for_server
from relevo.collect.service import CollectRequest
from relevo.config import Settings
from relevo.decisions.engine import Ask, DecideRequest
from relevo.profiles.identifiers import USER_ID, Identifier
from relevo.services import build_services
from relevo.testing.server import RelevoServer

BAR_IN_PROCESS_US = 200.0
BAR_HTTP_P99_MS = 5.0
BAR_HTTP_RATE = 1000.0
HISTOGRAM = "relevo_http_request_duration_seconds_bucket"
PLACEMENT = "feed"
PLANS = ("free", "pro", "gold")
COUNTRIES = ("de", "fr", "gb", "us", "es", "it", "nl", "se", "pl", "jp")
SPORTS = ("running", "hiking", "cycling", "yoga", "tennis")
DEVICES = ("mobile", "desktop", "tablet")
CATEGORIES = ("shoes", "jackets", "bags", "watches", "socks", "hats")
FEATURES = [
    "segments",
    "traits.plan",
    "traits.country",
    "traits.age_band",
    "traits.gender",
    "traits.sport",
    "traits.language",
    "traits.loyalty",
    "traits.orders",
    "traits.newsletter",
    "traits.app_user",
    "context.device.type",
    "context.page.category",
    "context.locale",
    "context.geo.country",
    "context.channel",
    "context.hour",
    "context.referrer",
    "context.weekday",
    "context.campaign",
]
ELIGIBILITY = (
    'traits.plan != "banned"',
    'context.channel == "web" or traits.app_user == true',
    "traits.orders >= 0",
    'traits.country in ["de", "fr", "gb", "us", "es", "it", "nl", "se", "pl", "jp"]',
    'context.device.type != "tv"',
)


def segments() -> dict[str, str]:
    found = {f"sport-{s}": f'traits.sport == "{s}"' for s in SPORTS}
    found |= {f"plan-{p}": f'traits.plan == "{p}"' for p in PLANS}
    found["loyal"] = "traits.loyalty >= 3"
    found["buyers"] = "traits.orders >= 1"
    return found


def catalog(offers: int) -> dict[str, Any]:
    return {
        "placements": [
            {
                "id": PLACEMENT,
                "arbitration": "bandit",
                "expose": ["traits.first_name"],
                "bandit": {
                    "algorithm": "lints",
                    "features": FEATURES,
                    "interactions": [["segments", "context.device.type"]],
                },
            }
        ],
        "offers": [
            {
                "id": f"offer-{i:03d}",
                "name": f"Offer {i}",
                "placements": [PLACEMENT],
                "eligibility": ELIGIBILITY[i % len(ELIGIBILITY)],
                "value": 1 + i % 7,
                "content": {
                    "title": "{{ offer.name }} for "
                    "{{ profile.traits.first_name | default('you') }}",
                    "image": f"https://cdn.example.com/offers/{i}.jpg",
                },
            }
            for i in range(offers)
        ],
    }


def traits(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "first_name": f"Person{i}",
        "plan": rng.choice(PLANS),
        "country": rng.choice(COUNTRIES),
        "age_band": rng.choice(("18-24", "25-34", "35-44", "45-54", "55+")),
        "gender": rng.choice(("f", "m", "x")),
        "sport": rng.choice(SPORTS),
        "language": rng.choice(("de", "en", "fr", "es")),
        "loyalty": rng.randint(0, 5),
        "orders": rng.randint(0, 20),
        "newsletter": rng.random() < 0.5,
        "app_user": rng.random() < 0.3,
    }


def context(rng: random.Random) -> dict[str, Any]:
    return {
        "channel": rng.choice(("web", "app")),
        "device": {"type": rng.choice(DEVICES)},
        "page": {"category": rng.choice(CATEGORIES)},
        "locale": rng.choice(("de-DE", "en-GB", "fr-FR")),
        "geo": {"country": rng.choice(COUNTRIES)},
        "hour": rng.randint(0, 23),
        "referrer": rng.choice(("google", "newsletter", "direct")),
        "weekday": rng.randint(0, 6),
        "campaign": rng.choice(("spring", "none")),
    }


@contextmanager
def workspace(directory: str | None) -> Iterator[Path]:
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="relevo-bench-decide-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_definitions(root: Path, offers: int) -> Path:
    definitions = root / "definitions"
    (definitions / "segments").mkdir(parents=True, exist_ok=True)
    (definitions / "decisions").mkdir(exist_ok=True)
    for name, rule in segments().items():
        (definitions / "segments" / f"{name}.yaml").write_text(
            yaml.safe_dump({"name": name, "rule": rule})
        )
    (definitions / "decisions" / "catalog.yaml").write_text(yaml.safe_dump(catalog(offers)))
    return definitions


def in_process(
    root: Path, definitions: Path, profiles: int, decisions: int, seed: int
) -> dict[str, Any]:
    """Fill the store with ``profiles`` people, then time ``decisions`` decisions."""
    settings = Settings(
        store_url=f"sqlite:///{root / 'relevo.db'}",
        definitions_dir=str(definitions),
        log_sync=False,
    )
    services = build_services(settings)
    rng = random.Random(seed)
    try:
        services.log.start()
        services.processor.load()
        write = services.keys.create("write", "bench").secret
        calls = [
            {
                "type": "identify",
                "userId": f"u{i}",
                "messageId": f"id-{i}",
                "traits": traits(rng, i),
            }
            for i in range(profiles)
        ]
        for start in range(0, len(calls), 500):
            body = json.dumps({"batch": calls[start : start + 500]}).encode()
            asyncio.run(
                services.collect.collect(
                    CollectRequest(body=body, implied_type=None, basic_user=write)
                )
            )
        while services.processor.run_once():
            pass
        services.decisions.start()
        asks = [Ask(PLACEMENT)]
        requests = [
            (Identifier(USER_ID, f"u{i % profiles}"), DecideRequest(asks, context(rng), f"u{i}"))
            for i in range(decisions)
        ]
        decide = services.decisions.decide
        for identifier, request in requests[:profiles]:  # warm: every profile in the cache
            decide(identifier, request.unit, request)
        services.decisions.flush()
        tune_for_server()
        times: list[float] = []
        cpu_started, started = time.process_time(), time.perf_counter()
        for identifier, request in requests:
            t0 = time.perf_counter()
            decide(identifier, request.unit, request)
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        services.decisions.flush()
        summary = summary_ms(times)
        return {
            "decisions": decisions,
            "per_decision_us": {
                "p50": round(summary["p50_ms"] * 1000, 1),
                "p99": round(summary["p99_ms"] * 1000, 1),
                "mean": round(wall / decisions * 1e6, 1),
                "cpu_mean": round(cpu / decisions * 1e6, 1),
            },
            "decisions_per_s": round(decisions / wall, 1),
        }
    finally:
        services.close()


async def over_http(
    server: RelevoServer,
    key: str,
    profiles: int,
    rate: float,
    seconds: float,
    runs: int,
    connections: int,
    seed: int,
) -> dict[str, Any]:
    """Warm every profile, then ``runs`` paced runs (each reported, and their latencies pooled:
    the bar is judged on the pooled p99), then a closed-loop run."""
    rng = random.Random(seed + 1)
    count = int(rate * seconds) + 1

    def request(user: int) -> Request:
        body = {"userId": f"u{user}", "placements": [PLACEMENT], "context": context(rng)}
        return build_request(
            "127.0.0.1",
            server.port,
            "POST",
            "/v1/decide",
            json.dumps(body).encode(),
            [("Authorization", f"Bearer {key}")],
        )

    warm = [request(user) for user in range(profiles)]
    requests = [request(rng.randrange(profiles)) for _ in range(max(count, 5000))]
    counts = [0] * len(requests)
    client = RawClient("127.0.0.1", server.port, connections)
    try:
        await closed_loop(client, warm, [0] * len(warm), connections)
        each, pooled, pooled_from_send = [], [], []
        for _ in range(runs):
            before = await _server_histogram(server)
            sent, start, end = await paced(client, requests, counts, 1.0 / rate, now() + seconds)
            result = sent.as_dict(end - start)
            result["server_side"] = _shares(before, await _server_histogram(server))
            each.append(_trim(result))
            pooled += sent.latencies
            pooled_from_send += sent.sent_latencies
        flat_out = await closed_loop(client, requests, counts, connections, min_seconds=5.0)
        elapsed = flat_out.last_ack - flat_out.first_send
        return {
            "paced": {
                "rate": rate,
                "seconds": seconds,
                "runs": each,
                "failed": sum(run["failed"] for run in each),
                "latency": summary_ms(pooled),
                "latency_from_send": summary_ms(pooled_from_send),
            },
            "closed_loop": {"connections": connections, **_trim(flat_out.as_dict(elapsed))},
        }
    finally:
        await client.aclose()


def _trim(result: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "requests_ok",
        "failed",
        "statuses",
        "requests_per_s",
        "latency",
        "latency_from_send",
        "server_side",
    )
    return {k: result[k] for k in keep if k in result}


async def _server_histogram(server: RelevoServer) -> dict[str, float]:
    """The server's own request-duration histogram of the decide route (cumulative counts by
    bucket bound), from ``/metrics``: latency without the load generator's share."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.url}/metrics")).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(HISTOGRAM) and 'route="decide"' in line and 'status="200"' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found[bound] = found.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def _shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The share of the run's requests the server answered within each bucket bound (ms)."""
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    return {
        f"within_{float(bound) * 1000:g}ms": round(
            (after[bound] - before.get(bound, 0.0)) / total, 5
        )
        for bound in after
        if bound != "+Inf" and total > 0
    }


def run(
    *,
    offers: int,
    profiles: int,
    decisions: int,
    rate: float,
    seconds: float,
    runs: int,
    connections: int,
    seed: int,
    out: str,
    directory: str | None,
    quiet_wait: float,
    pin_server: bool,
) -> None:
    with workspace(directory) as root:
        definitions = write_definitions(root, offers)
        quiet = wait_for_quiet(quiet_wait)
        os.sched_setaffinity(0, {0})
        local = in_process(root, definitions, profiles, decisions, seed)
        os.sched_setaffinity(0, {1})
        # the server may use both cores (the bar is for the machine, load generator included:
        # it needs a few percent of CPU 1); --pin-server confines it to CPU 0
        server = RelevoServer(
            root, env={"RELEVO_DEFINITIONS_DIR": str(definitions)}, cpu=0 if pin_server else None
        )
        key = server.create_key("server")
        server.start()
        try:
            # uvloop: the stock loop's timers are late by up to a millisecond, which a paced
            # sender would count as the server's latency
            http = uvloop.run(
                over_http(server, key, profiles, rate, seconds, runs, connections, seed)
            )
        finally:
            server.stop()
    results = {
        "benchmark": "decide",
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "quiet_before_start": quiet,
        "source": source_state(Path(__file__).resolve().parent.parent),
        "workload": {
            "offers": offers,
            "features": len(FEATURES),
            "algorithm": "lints",
            "profiles": profiles,
            "segments": len(segments()),
        },
        "in_process": local,
        "http": {"server_cpus": "0" if pin_server else "0,1", **http},
        "bar": {
            "in_process_us_max": BAR_IN_PROCESS_US,
            "in_process_met": local["per_decision_us"]["mean"] < BAR_IN_PROCESS_US,
            "http_p99_ms_max": BAR_HTTP_P99_MS,
            "http_rate": rate,
            "http_met": rate >= BAR_HTTP_RATE
            and http["paced"]["failed"] == 0
            and http["paced"]["latency"]["p99_ms"] < BAR_HTTP_P99_MS,
        },
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(results)) + b"\n")
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    w, local, http, bar = (
        results["workload"],
        results["in_process"],
        results["http"],
        results["bar"],
    )
    d = local["per_decision_us"]
    paced_latency = http["paced"]["latency"]
    runs = http["paced"]["runs"]
    flat = http["closed_loop"]
    rows = [
        *header_rows(results),
        (
            "workload",
            f"{w['offers']} offers, {w['features']} feature paths, {w['algorithm']}, "
            f"{w['profiles']} profiles, {w['segments']} segments",
        ),
        (
            "in-process decision",
            f"p50 {d['p50']} us / p99 {d['p99']} us / mean {d['mean']} us "
            f"(CPU {d['cpu_mean']} us) -> {local['decisions_per_s']:,.0f}/s on one core",
        ),
        (
            f"HTTP at {http['paced']['rate']:g}/s, {len(runs)} runs pooled",
            f"p50 {paced_latency['p50_ms']:.2f} / p99 {paced_latency['p99_ms']:.2f} / "
            f"max {paced_latency['max_ms']:.2f} ms, {http['paced']['failed']} failed "
            f"(server on CPUs {http['server_cpus']})",
        ),
        *(
            (
                f"  run {number}",
                f"p99 {run['latency']['p99_ms']:.2f} ms ({run['latency_from_send']['p99_ms']:.2f} "
                f"from the send); server answered {run['server_side'].get('within_5ms', 0):.2%} "
                "within 5 ms",
            )
            for number, run in enumerate(runs, 1)
        ),
        (
            f"HTTP flat out ({flat['connections']} conns)",
            f"{flat['requests_per_s']:,.0f} req/s, p50 {flat['latency']['p50_ms']:.2f} / "
            f"p99 {flat['latency']['p99_ms']:.2f} ms",
        ),
        (
            "bar",
            f"in-process < {bar['in_process_us_max']:g} us: "
            f"{'met' if bar['in_process_met'] else 'NOT met'}; "
            f"HTTP p99 < {bar['http_p99_ms_max']:g} ms at {bar['http_rate']:g}/s: "
            f"{'met' if bar['http_met'] else 'NOT met'}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
