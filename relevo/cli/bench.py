"""``relevo bench``: the benchmarks in ``bench/``."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Run a benchmark; prints a table and writes JSON results."""


_pin_server = click.option(
    "--pin-server/--share-cores",
    default=False,
    help="Pin the server to CPU 0 (default: it shares both cores with the load generator).",
)


@bench.command("ingest")
@click.option("--events", type=int, default=200_000, help="Events to send at full speed.")
@click.option("--batch", type=int, default=100, help="Events per HTTP request.")
@click.option("--connections", type=int, default=8, help="Concurrent HTTP connections.")
@click.option("--out", default="bench/results/ingest.json", help="Where to write the JSON.")
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Events/s of the paced load during the freshness run (default: half the measured "
    "end-to-end rate).",
)
@click.option(
    "--seconds",
    type=float,
    default=10.0,
    help="Length of the freshness run (stretched to leave room for at least --probes probes).",
)
@click.option("--profiles", type=int, default=20_000, help="Distinct people in the workload.")
@click.option(
    "--client",
    type=click.Choice(["raw", "httpx"]),
    default="raw",
    help="HTTP client of the load generator.",
)
@click.option("--probes", type=int, default=200, help="Least number of freshness probes.")
@click.option("--probe-interval-ms", type=float, default=20.0, help="Time between probes.")
@click.option("--poll-interval-ms", type=float, default=1.0, help="Pause between profile polls.")
@click.option("--seed", type=int, default=1, help="Seed of the generated workload.")
@click.option(
    "--ceiling/--no-ceiling",
    default=True,
    help="Measure the load generator against a trivial HTTP sink first.",
)
@click.option(
    "--profile",
    "profile_dir",
    default=None,
    help="Record the server with py-spy into this directory (needs py-spy installed).",
)
@click.option(
    "--dir",
    "directory",
    default=None,
    help="Directory for the server's files (default: a temporary one, removed afterwards).",
)
@click.option(
    "--quiet-wait",
    type=float,
    default=60.0,
    help="Seconds to wait at most for idle CPUs before measuring the server.",
)
@click.option(
    "--env",
    "server_env",
    multiple=True,
    metavar="NAME=VALUE",
    help="An environment variable for the server, e.g. RELEVO_LOG_SYNC=false (repeatable).",
)
@_pin_server
@click.option(
    "--stream",
    type=click.Choice(["embedded", "redis", "nats"]),
    default="embedded",
    help="The event log: the embedded default, or a fresh Redis or NATS stream on 127.0.0.1.",
)
@click.option(
    "--store",
    type=click.Choice(["sqlite", "postgresql"]),
    default="sqlite",
    help="The state store: the embedded default, or a fresh PostgreSQL schema on 127.0.0.1.",
)
def ingest(
    events: int,
    batch: int,
    connections: int,
    out: str,
    rate: float | None,
    seconds: float,
    profiles: int,
    client: str,
    probes: int,
    probe_interval_ms: float,
    poll_interval_ms: float,
    seed: int,
    ceiling: bool,
    profile_dir: str | None,
    directory: str | None,
    quiet_wait: float,
    server_env: tuple[str, ...],
    pin_server: bool,
    stream: str,
    store: str,
) -> None:
    """Durable ingest over HTTP and processing into profiles, end to end; freshness."""
    from bench._engines import engines
    from bench.ingest import run

    env = {}
    for item in server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value

    with engines(stream, store) as engine_env:
        run(
            events=events,
            batch=batch,
            connections=connections,
            out=out,
            rate=rate,
            seconds=seconds,
            profiles=profiles,
            client="httpx" if client == "httpx" else "raw",
            probes=probes,
            probe_interval_ms=probe_interval_ms,
            poll_interval_ms=poll_interval_ms,
            seed=seed,
            ceiling=ceiling,
            profile_dir=profile_dir,
            directory=directory,
            quiet_wait=quiet_wait,
            server_env={**engine_env, **env},
            pin_server=pin_server,
        )


@bench.command("segments")
@click.option("--events", type=int, default=100_000, help="Events through the processor.")
@click.option("--profiles", type=int, default=10_000, help="Distinct people in the workload.")
@click.option("--seed", type=int, default=1, help="Seed of the generated workload.")
@click.option("--out", default="bench/results/segments.json", help="Where to write the JSON.")
@click.option(
    "--latency-events",
    type=int,
    default=500,
    help="Segment changes timed from the event's 2xx to its webhook (0: skip that part).",
)
@click.option("--rate", type=float, default=50.0, help="Events/s of the latency run.")
@click.option(
    "--baseline/--no-baseline",
    default=True,
    help="Also time the processor with no segment or computed trait defined.",
)
@click.option(
    "--profile",
    "profile_dir",
    default=None,
    help="Record the throughput runs with py-spy into this directory (needs py-spy).",
)
@click.option(
    "--dir",
    "directory",
    default=None,
    help="Directory for the stores (default: a temporary one, removed afterwards).",
)
@click.option(
    "--quiet-wait",
    type=float,
    default=60.0,
    help="Seconds to wait at most for idle CPUs before measuring.",
)
def segments(
    events: int,
    profiles: int,
    seed: int,
    out: str,
    latency_events: int,
    rate: float,
    baseline: bool,
    profile_dir: str | None,
    directory: str | None,
    quiet_wait: float,
) -> None:
    """Processing with 100 segments and 30 computed traits; event-to-webhook latency."""
    from bench.segments import run

    run(
        events=events,
        profiles=profiles,
        seed=seed,
        out=out,
        latency_events=latency_events,
        rate=rate,
        baseline=baseline,
        profile_dir=profile_dir,
        directory=directory,
        quiet_wait=quiet_wait,
    )


@bench.command("ope")
@click.option(
    "--campaign",
    "campaigns",
    multiple=True,
    default=("random/all", "bts/all"),
    show_default=True,
    help="An Open Bandit Dataset sample campaign, or its directory (repeatable).",
)
@click.option("--dim", type=int, default=64, show_default=True, help="Context vector length.")
@click.option(
    "--train-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.7,
    show_default=True,
    help="The earlier share of each log to train on.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the policies.")
@click.option("--out", default="bench/results/ope.json", help="Where to write the JSON.")
def ope(campaigns: tuple[str, ...], dim: int, train_fraction: float, seed: int, out: str) -> None:
    """Relevo's policies evaluated off-policy (IPS, SNIPS, DR) on the Open Bandit Dataset."""
    from bench.ope import run

    try:
        run(campaigns=campaigns, dim=dim, train_fraction=train_fraction, seed=seed, out=out)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("decide")
@click.option("--offers", type=int, default=50, help="Offers in the bandit placement.")
@click.option("--profiles", type=int, default=2000, help="People in the store.")
@click.option("--decisions", type=int, default=20_000, help="Decisions timed in-process.")
@click.option("--rate", type=float, default=1000.0, help="Requests/s of the paced HTTP runs.")
@click.option("--seconds", type=float, default=10.0, help="Length of each paced HTTP run.")
@click.option("--runs", type=int, default=3, help="Paced HTTP runs (their latencies are pooled).")
@click.option("--connections", type=int, default=16, help="HTTP connections.")
@click.option("--seed", type=int, default=1, help="Seed of the generated workload.")
@click.option("--out", default="bench/results/decide.json", help="Where to write the JSON.")
@click.option(
    "--dir",
    "directory",
    default=None,
    help="Directory for the store (default: a temporary one, removed afterwards).",
)
@click.option(
    "--quiet-wait",
    type=float,
    default=60.0,
    help="Seconds to wait at most for idle CPUs before measuring.",
)
@_pin_server
def decide(
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
    """Decision cost in-process and latency over HTTP (50 offers, a bandit placement)."""
    from bench.decide import run

    run(
        offers=offers,
        profiles=profiles,
        decisions=decisions,
        rate=rate,
        seconds=seconds,
        runs=runs,
        connections=connections,
        seed=seed,
        out=out,
        directory=directory,
        quiet_wait=quiet_wait,
        pin_server=pin_server,
    )


@bench.command("drain")
@click.option(
    "--stream",
    "streams",
    type=click.Choice(["redis", "nats"]),
    multiple=True,
    default=("redis", "nats"),
    help="Event log backend (repeatable).",
)
@click.option("--events", type=int, default=200_000, help="Events pre-filled into the stream.")
@click.option("--profiles", type=int, default=20_000, help="Distinct people in the workload.")
@click.option("--seed", type=int, default=1, help="Seed of the generated workload.")
@click.option("--out", default="bench/results/drain.json", help="Where to write the JSON.")
@click.option(
    "--quiet-wait", type=float, default=60.0, help="Seconds to wait at most for idle CPUs."
)
@click.option(
    "--profile",
    "profile_dir",
    default=None,
    help="Record every worker with py-spy into this directory (needs py-spy).",
)
def drain(
    streams: tuple[str, ...],
    events: int,
    profiles: int,
    seed: int,
    out: str,
    quiet_wait: float,
    profile_dir: str | None,
) -> None:
    """Drain a pre-filled Redis or NATS stream into PostgreSQL with 1, then 2 workers."""
    from bench.drain import run

    run(
        streams=list(streams),
        events=events,
        profiles=profiles,
        seed=seed,
        out=out,
        quiet_wait=quiet_wait,
        profile_dir=profile_dir,
    )
