"""``relevo bench ingest``: durable ingest over HTTP, processing into profiles, freshness.

Three measurements, each bounded in time and count, all on 127.0.0.1:

1. **Generator ceiling.** The same pre-encoded batches sent to a trivial HTTP sink
   (``bench._sink``) on the server's core: the most this load generator can send, for the raw
   client and for httpx.
2. **Throughput.** ``relevo serve`` pinned to CPU 0 in a fresh directory, this process (the load
   generator) pinned to CPU 1. ``events`` events in ``/v1/batch`` requests of ``batch`` over
   ``connections`` keep-alive connections, closed loop, as fast as they are answered. Reported:
   events/s durably accepted (2xx), events/s processed end to end (first send until
   ``relevo_events_processed_total`` reaches the total, polled from ``/metrics``), request
   latency, and the server's CPU by thread.
3. **Freshness.** Against the same server, a paced load at ``rate`` (default: half the measured
   end-to-end rate) while a probe ``track`` for a dedicated probe user is sent every
   ``probe_interval_ms`` and its profile polled every ``poll_interval_ms``. Freshness is the time
   from the probe's 2xx to the first poll, started after that 2xx, whose ``event_counts`` shows
   the probe. The polls are load too: their rate is reported.

Results are printed as a table and written as JSON to ``out``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from bench import _perf, _pyspy
from bench._http import ClientKind, make_client
from bench._load import (
    DRAIN_TIMEOUT,
    HOST,
    Target,
    Watch,
    batch_counts,
    closed_loop,
    now,
    paced,
    processed_total,
)
from bench._measure import (
    cpu_between,
    cpu_times,
    cpu_usage,
    filesystem_of,
    free_port,
    machine,
    source_state,
    summary_ms,
    thread_cpu,
)
from bench._probes import Probes, poll_probes, send_probes
from bench._report import bar, print_table, ratios
from bench._workload import Batches, EventFactory, Person, make_batches, population
from relevo.testing.server import RelevoServer

SERVER_CPU, LOAD_CPU = 0, 1

# /metrics polls while measuring throughput: each costs the server ~0.5-0.7 ms of CPU (Prometheus
# text rendering), so 10/s is under 1% of its core; the end time is interpolated between polls
METRICS_EVERY = 0.1
LAG_EVERY = 0.1  # /metrics polls during the freshness run
PROBE_WARMUP = 1.0  # seconds of paced load before the first probe
WARMUP_EVENTS = 5_000
SINK_READY_TIMEOUT = 10.0
QUIET_BUSY = 0.2  # a CPU busier than this (before we start) is running someone else's work
CEILING_SECONDS = 3.0  # the generator ceiling repeats the batches for at least this long
PYSPY_RATE, PERF_RATE = 250, 499  # samples per second

T = TypeVar("T")


class Profilers:
    """py-spy (Python side, GIL holder) and perf (CPU below Python), when installed, recording
    the server from the load generator's core for one phase."""

    def __init__(self, pid: int, directory: Path, phase: str) -> None:
        cpu = LOAD_CPU if _pinned() else None
        self.pyspy = (
            _pyspy.Recording(pid, directory / f"{phase}.pyspy.txt", PYSPY_RATE, cpu)
            if _pyspy.py_spy()
            else None
        )
        self.perf = (
            _perf.Recording(pid, directory / f"{phase}.perf.data", PERF_RATE, cpu)
            if _perf.perf()
            else None
        )

    def stop(self) -> None:
        for recording in (self.pyspy, self.perf):
            if recording is not None:
                recording.stop()

    def summary(self, names: dict[int, str], events: int, wall: float) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.pyspy is not None:
            stacks = _pyspy.read_stacks(self.pyspy.out, names)
            found["python"] = {
                "file": str(self.pyspy.out),
                **_pyspy.summarise(stacks, self.pyspy.rate, events, wall),
            }
        if self.perf is not None:
            samples = _perf.read_samples(self.perf.out)
            found["native"] = {
                "file": str(self.perf.out),
                **_perf.summarise(samples, self.perf.rate, names, events),
            }
        return found


# -- phases ---------------------------------------------------------------------------------------


async def generator_ceiling(
    kind: ClientKind, batches: Batches, batch: int, connections: int, server_cpu: int | None
) -> dict[str, Any]:
    """Send the batches to the trivial sink: what the generator itself can do."""
    port = free_port()
    command = [sys.executable, "-m", "bench._sink", str(port)]
    if server_cpu is not None:
        command = ["taskset", "-c", str(server_cpu), *command]
    sink = subprocess.Popen(command)
    try:
        await _wait_listening(port, sink)
        requests = Target(port, "bench").batch_requests(batches)
        client = make_client(kind, HOST, port, connections)
        cpu_before, started = time.process_time(), now()
        try:
            sent = await closed_loop(
                client, requests, batch_counts(batches, batch), connections, CEILING_SECONDS
            )
        finally:
            await client.aclose()
        wall = max(sent.last_ack, started) - started
        cpu = time.process_time() - cpu_before
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    result = {"client": kind, "seconds": round(wall, 3), **sent.as_dict(wall)}
    del result["accepted"], result["duplicates"]
    result["generator_cpu_utilisation"] = round(cpu / wall, 3) if wall > 0 else 0.0
    result["generator_us_per_request"] = round(cpu / max(len(sent.latencies), 1) * 1e6, 1)
    return result


async def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = now() + SINK_READY_TIMEOUT
    while now() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the HTTP sink exited early")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError("the HTTP sink did not start listening")


async def warm_up(target: Target, batches: Batches, batch: int, connections: int) -> None:
    """A few thousand events first, so connections, caches and the files are warm."""
    client = make_client("raw", HOST, target.port, connections)
    try:
        before = await processed_total(target.port)
        sent = await closed_loop(
            client, target.batch_requests(batches), batch_counts(batches, batch), connections
        )
    finally:
        await client.aclose()
    deadline = now() + DRAIN_TIMEOUT
    while now() < deadline and await processed_total(target.port) < before + sent.accepted:
        await asyncio.sleep(0.05)


async def throughput(
    target: Target,
    server: RelevoServer,
    batches: Batches,
    *,
    batch: int,
    connections: int,
    kind: ClientKind,
    profile_dir: Path | None,
) -> dict[str, Any]:
    pid = server.pid
    assert pid is not None
    requests = target.batch_requests(batches)
    counts = batch_counts(batches, batch)
    baseline = await processed_total(target.port)
    watch = Watch(target.port, METRICS_EVERY)
    profilers = Profilers(pid, profile_dir, "throughput") if profile_dir else None
    client = make_client(kind, HOST, target.port, connections)
    watcher = asyncio.create_task(watch.run())
    cpu_before, generator_before, machine_before = thread_cpu(pid), time.process_time(), cpu_times()
    try:
        sent = await closed_loop(client, requests, counts, connections)
        processed_at = await watch.reached(baseline + sent.accepted, DRAIN_TIMEOUT)
    finally:
        watch.stop.set()
        await watcher
        await client.aclose()
    end = processed_at or now()
    cpu_after, generator_cpu = thread_cpu(pid), time.process_time() - generator_before
    machine_cpu = cpu_usage(machine_before, cpu_times())
    if profilers is not None:
        profilers.stop()
    names = _pyspy.thread_names(pid)
    start = sent.first_send
    accept_wall, e2e_wall = sent.last_ack - start, end - start
    lags = [lag for _, _, lag in watch.samples]
    result: dict[str, Any] = {
        "client": kind,
        "connections": connections,
        "batch": batch,
        "events": batches.events,
        "complete": processed_at is not None and sent.accepted == batches.events,
        "accept_seconds": round(accept_wall, 3),
        "end_to_end_seconds": round(e2e_wall, 3),
        "drain_after_last_ack_seconds": round(end - sent.last_ack, 3),
        "accepted_events_per_s": round(sent.accepted / accept_wall, 1) if accept_wall else 0.0,
        "end_to_end_events_per_s": round(sent.accepted / e2e_wall, 1) if e2e_wall else 0.0,
        "requests": sent.as_dict(accept_wall),
        "max_processing_lag_events": max(lags, default=0.0),
        "metrics_polls": len(watch.samples),
        "metrics_polls_per_s": round(len(watch.samples) / e2e_wall, 1) if e2e_wall else 0.0,
        "server_cpu": cpu_between(
            cpu_before, cpu_after, pid=pid, names=names, wall=e2e_wall, events=sent.accepted
        ),
        "cpus": machine_cpu,
        "foreign_busy": _foreign(
            machine_cpu, _ours(cpu_before, cpu_after, generator_cpu, e2e_wall)
        ),
        "generator_cpu": {
            "cpu_seconds": round(generator_cpu, 3),
            "utilisation": round(generator_cpu / e2e_wall, 3) if e2e_wall else 0.0,
            "us_per_event": round(generator_cpu / max(sent.accepted, 1) * 1e6, 2),
        },
    }
    if profilers is not None:
        result["profile"] = profilers.summary(names, sent.accepted, e2e_wall)
        result["profile"]["thread_names"] = {str(tid): name for tid, name in names.items()}
    return result


async def freshness(
    target: Target,
    server: RelevoServer,
    server_key: str,
    batches: Batches,
    *,
    batch: int,
    connections: int,
    rate: float,
    seconds: float,
    probe_interval: float,
    poll_interval: float,
    profile_dir: Path | None,
) -> dict[str, Any]:
    pid = server.pid
    assert pid is not None
    interval = batch / rate
    requests = target.batch_requests(batches)
    counts = batch_counts(batches, batch)
    probes = Probes(user=f"bench-probe-{os.getpid()}-{int(time.time())}")
    watch = Watch(target.port, LAG_EVERY)
    profilers = Profilers(pid, profile_dir, "freshness") if profile_dir else None
    client = make_client("raw", HOST, target.port, connections)
    watcher = asyncio.create_task(watch.run())
    cpu_before, generator_before, machine_before = thread_cpu(pid), time.process_time(), cpu_times()
    start = now()
    until = start + seconds
    try:
        load = asyncio.create_task(paced(client, requests, counts, interval, until))
        prober = asyncio.create_task(
            send_probes(probes, target, probe_interval, start + PROBE_WARMUP, until)
        )
        poller = asyncio.create_task(poll_probes(probes, target, server_key, poll_interval))
        sent, load_start, load_end = await load
        await prober
        await poller
    finally:
        watch.stop.set()
        await watcher
        await client.aclose()
    end = now()
    cpu_after, generator_cpu = thread_cpu(pid), time.process_time() - generator_before
    machine_cpu = cpu_usage(machine_before, cpu_times())
    if profilers is not None:
        profilers.stop()
    names = _pyspy.thread_names(pid)
    load_wall = load_end - load_start
    lags = [lag for _, _, lag in watch.samples]
    probe_wall = max(until - (start + PROBE_WARMUP), 1e-9)
    result: dict[str, Any] = {
        "target_events_per_s": round(rate, 1),
        "seconds": round(load_wall, 3),
        "achieved_events_per_s": round(sent.events_ok / load_wall, 1) if load_wall else 0.0,
        "load_requests": sent.as_dict(load_wall),
        "probe_interval_ms": probe_interval * 1000,
        "poll_interval_ms": poll_interval * 1000,
        "probes_sent": probes.sent,
        "probes_seen": len(probes.freshness),
        "probes_failed": probes.failed,
        "probes_lost": probes.lost + len(probes.outstanding),
        "freshness": summary_ms(probes.freshness),
        "send_to_visible": summary_ms(probes.send_to_visible),
        "probe_ack_latency": summary_ms(probes.ack_latency),
        "profile_poll_latency": summary_ms(probes.poll_latency),
        "profile_polls": probes.polls,
        "profile_polls_per_s": round(probes.polls / probe_wall, 1),
        "processing_lag_events": {
            "max": max(lags, default=0.0),
            "mean": round(sum(lags) / len(lags), 1) if lags else 0.0,
            "samples": len(lags),
        },
        "server_cpu": cpu_between(
            cpu_before, cpu_after, pid=pid, names=names, wall=end - start, events=sent.events_ok
        ),
        "cpus": machine_cpu,
        "foreign_busy": _foreign(
            machine_cpu, _ours(cpu_before, cpu_after, generator_cpu, end - start)
        ),
        "generator_cpu_utilisation": round(generator_cpu / (end - start), 3),
    }
    if profilers is not None:
        result["profile"] = profilers.summary(names, sent.events_ok, end - start)
        result["profile"]["thread_names"] = {str(tid): name for tid, name in names.items()}
    return result


# -- the run -------------------------------------------------------------------------------------


def _pinned() -> bool:
    return (os.cpu_count() or 1) >= 2


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


def wait_for_quiet(limit: float, busy_at_most: float = QUIET_BUSY) -> dict[str, Any]:
    """Wait (at most ``limit`` seconds) for a second in which every CPU is mostly idle: on a
    shared machine, other work on the server's core is measured as the server's slowness."""
    started = now()
    usage: dict[str, Any] = {}
    while True:
        before = cpu_times()
        time.sleep(1.0)
        usage = cpu_usage(before, cpu_times())
        quiet = all(u["busy"] <= busy_at_most for u in usage.values())
        if quiet or now() - started >= limit:
            return {"quiet": quiet, "waited_seconds": round(now() - started, 1), "cpus": usage}


def _ours(
    server_before: dict[int, float], server_after: dict[int, float], generator: float, wall: float
) -> dict[str, float]:
    """Our own busy share of each pinned CPU over a window."""
    if wall <= 0:
        return {}
    server = sum(server_after.values()) - sum(server_before.values())
    return {f"cpu{SERVER_CPU}": server / wall, f"cpu{LOAD_CPU}": generator / wall}


def _foreign(cpus: dict[str, Any], ours: dict[str, float]) -> dict[str, float]:
    """Busy share of each CPU not explained by the server (cpu0) or the generator (cpu1)."""
    return {
        name: round(max(0.0, usage["busy"] - ours.get(name, 0.0)), 3)
        for name, usage in cpus.items()
    }


def _timed(label: str) -> Callable[[], None]:
    started = now()
    print(f"{label} ...", flush=True)
    return lambda: print(f"{label}: {now() - started:.1f}s", flush=True)


@dataclass(frozen=True)
class Plan:
    events: int
    batch: int
    connections: int
    rate: float | None
    seconds: float
    profiles: int
    client: ClientKind
    probe_interval: float
    poll_interval: float
    seed: int
    server_cpu: int | None
    profile_dir: Path | None
    directory: Path | None
    server_env: dict[str, str]


def run(
    *,
    events: int,
    batch: int,
    connections: int,
    out: str,
    rate: float | None = None,
    seconds: float = 10.0,
    profiles: int = 20_000,
    client: ClientKind = "raw",
    probe_interval_ms: float = 20.0,
    poll_interval_ms: float = 1.0,
    probes: int = 200,
    seed: int = 1,
    ceiling: bool = True,
    profile_dir: str | None = None,
    directory: str | None = None,
    quiet_wait: float = 60.0,
    server_env: dict[str, str] | None = None,
    pin_server: bool = False,
) -> dict[str, Any]:
    """Run the measurements, print a table, write the JSON to ``out`` and return it.

    ``seconds`` is stretched so that at least ``probes`` probes are sent; ``rate`` defaults to
    half the measured end-to-end rate; ``profile_dir`` records the server with py-spy and perf;
    ``server_env`` adds environment variables for the server (``RELEVO_*`` settings).
    """
    if events < batch or batch < 1 or connections < 1 or profiles < 1:
        raise ValueError("need events >= batch >= 1, connections >= 1, profiles >= 1")
    pinned = _pinned()
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})
    plan = Plan(
        events=events,
        batch=batch,
        connections=connections,
        rate=rate,
        seconds=max(seconds, PROBE_WARMUP + probes * probe_interval_ms / 1000 * 1.1),
        profiles=profiles,
        client=client,
        probe_interval=probe_interval_ms / 1000,
        poll_interval=poll_interval_ms / 1000,
        seed=seed,
        # by default the server may use both cores: the bar is for the whole machine with the
        # load generator included (it needs ~1-3 % of CPU 1); --pin-server measures one core
        server_cpu=SERVER_CPU if pinned and pin_server else None,
        profile_dir=Path(profile_dir).resolve() if profile_dir else None,
        directory=Path(directory) if directory else None,
        server_env=dict(server_env or {}),
    )
    if plan.profile_dir is not None:
        if _pyspy.py_spy() is None and _perf.perf() is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy) or perf")
        plan.profile_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "command": shlex.join(sys.argv),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source_state(Path(__file__).resolve().parent.parent),
        "pinning": {"server_cpu": plan.server_cpu, "generator_cpu": LOAD_CPU if pinned else None},
        "parameters": {
            "events": events,
            "batch": batch,
            "connections": connections,
            "profiles": profiles,
            "client": client,
            "rate": rate,
            "seconds": plan.seconds,
            "probe_interval_ms": probe_interval_ms,
            "poll_interval_ms": poll_interval_ms,
            "min_probes": probes,
            "seed": seed,
            "server_env": plan.server_env,
        },
    }
    done = _timed("generating the workload")
    people = population(profiles, seed)
    started = now()
    main_batches = make_batches(EventFactory(people, seed, stream=1), events, batch)
    results["workload"] = {
        "events": events,
        "batch": batch,
        "requests": len(main_batches.bodies),
        "profiles": profiles,
        "event_bytes_mean": round(main_batches.event_bytes_mean, 1),
        "event_bytes_min": main_batches.event_bytes_min,
        "event_bytes_max": main_batches.event_bytes_max,
        "request_bytes_mean": round(
            sum(len(b) for b in main_batches.bodies) / len(main_batches.bodies)
        ),
        "generation_seconds": round(now() - started, 2),
    }
    done()
    if ceiling:
        results["generator_ceiling"] = _ceilings(plan, main_batches)
    done = _timed(f"waiting (at most {quiet_wait:g}s) for a quiet machine")
    results["quiet_before_start"] = wait_for_quiet(quiet_wait)
    done()
    results.update(_against_relevo(plan, people, main_batches))
    results["ratios"] = ratios(results)
    results["bar"] = bar(results)
    print_table(results)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2) + b"\n")
    print(f"\nwrote {out_path}")
    return results


def _ceilings(plan: Plan, batches: Batches) -> list[dict[str, Any]]:
    found = []
    kinds: tuple[ClientKind, ...] = ("raw", "httpx")
    for kind in kinds:
        done = _timed(f"generator ceiling ({kind} client against a trivial sink)")
        found.append(
            _run_async(
                partial(
                    generator_ceiling, kind, batches, plan.batch, plan.connections, plan.server_cpu
                )
            )
        )
        done()
    return found


def _against_relevo(plan: Plan, people: list[Person], batches: Batches) -> dict[str, Any]:
    """Warm-up, throughput and freshness against one ``relevo serve`` in a fresh directory."""
    found: dict[str, Any] = {}
    base = plan.directory or Path(tempfile.mkdtemp(prefix="relevo-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    found["server_directory_fs"] = filesystem_of(base)
    # unpinned means every core: without taskset the server would inherit this process's
    # affinity (the load generator's one CPU)
    every_cpu = f"0-{(os.cpu_count() or 1) - 1}"
    server = RelevoServer(
        base,
        cpu=plan.server_cpu if plan.server_cpu is not None else every_cpu,
        env=plan.server_env,
    )
    try:
        write_key, server_key = server.create_key("write"), server.create_key("server")
        server.start()
        target = Target(server.port, write_key)
        done = _timed("warm-up")
        warm = make_batches(EventFactory(people, plan.seed, stream=2), WARMUP_EVENTS, plan.batch)
        _run_async(partial(warm_up, target, warm, plan.batch, plan.connections))
        done()

        done = _timed(
            f"throughput: {plan.events} events, batches of {plan.batch}, "
            f"{plan.connections} connections"
        )
        found["throughput"] = _run_async(
            partial(
                throughput,
                target,
                server,
                batches,
                batch=plan.batch,
                connections=plan.connections,
                kind=plan.client,
                profile_dir=plan.profile_dir,
            )
        )
        done()

        e2e = found["throughput"]["end_to_end_events_per_s"]
        rate = plan.rate or max(e2e * 0.5, float(plan.batch))
        count = math.ceil(rate * plan.seconds * 1.05 / plan.batch) * plan.batch
        paced = make_batches(EventFactory(people, plan.seed, stream=3), count, plan.batch)
        done = _timed(
            f"freshness: {rate:.0f} events/s for {plan.seconds:.0f}s, "
            f"a probe every {plan.probe_interval * 1000:g} ms"
        )
        found["freshness"] = _run_async(
            partial(
                freshness,
                target,
                server,
                server_key,
                paced,
                batch=plan.batch,
                connections=plan.connections,
                rate=rate,
                seconds=plan.seconds,
                probe_interval=plan.probe_interval,
                poll_interval=plan.poll_interval,
                profile_dir=plan.profile_dir,
            )
        )
        done()
    finally:
        server.stop()
        if plan.directory is None:
            shutil.rmtree(base, ignore_errors=True)
    return found
