"""The ingest benchmark's verdicts and table: ratios to the ceilings, the bar, the printout."""

from __future__ import annotations

from typing import Any

# perf-ceilings.md (this machine class, 2 cores): the same work at its best
CEILING_STARLETTE_COLLECT_RPS = 12_600  # Starlette on uvicorn, one collect request per call
CEILING_SQLITE_ROWS_100_PER_TXN = 180_000  # SQLite WAL, 100 rows per transaction
CEILING_PROCESSING_PER_CORE = 110_000  # in-process processing (orjson + validation + profile)
CEILING_US_PER_EVENT = 3.6 + 2.9 + 8.9  # collect logic + SQLite row + processing, per event
BAR_EVENTS_PER_S = 20_000
BAR_FRESHNESS_P99_MS = 50.0


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The figures as fractions of the ceilings in perf-ceilings.md (1.0 = at the ceiling)."""
    t = results["throughput"]
    found = {
        "requests_per_s_vs_starlette_collect": t["requests"]["requests_per_s"]
        / CEILING_STARLETTE_COLLECT_RPS,
        "accepted_vs_sqlite_100_per_txn": t["accepted_events_per_s"]
        / CEILING_SQLITE_ROWS_100_PER_TXN,
        "end_to_end_vs_processing_per_core": t["end_to_end_events_per_s"]
        / CEILING_PROCESSING_PER_CORE,
        "ceiling_us_per_event_vs_server_us_per_event": CEILING_US_PER_EVENT
        / max(t["server_cpu"]["us_per_event"], 1e-9),
    }
    for entry in results.get("generator_ceiling", []):
        if entry["client"] == t["client"] and entry["events_per_s"]:
            found["end_to_end_vs_generator_ceiling"] = (
                t["end_to_end_events_per_s"] / entry["events_per_s"]
            )
    return {name: round(value, 3) for name, value in found.items()}


def bar(results: dict[str, Any]) -> dict[str, Any]:
    e2e = results["throughput"]["end_to_end_events_per_s"]
    p99 = results["freshness"]["freshness"].get("p99_ms")
    return {
        "end_to_end_events_per_s_min": BAR_EVENTS_PER_S,
        "freshness_p99_ms_max": BAR_FRESHNESS_P99_MS,
        "end_to_end_met": e2e >= BAR_EVENTS_PER_S,
        "freshness_met": p99 is not None and p99 < BAR_FRESHNESS_P99_MS,
    }


def _ms(summary: dict[str, float]) -> str:
    if not summary.get("count"):
        return "-"
    return (
        f"p50 {summary['p50_ms']:.2f} / p99 {summary['p99_ms']:.2f} / max {summary['max_ms']:.2f}"
    )


def header_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The machine and how quiet it was: the first rows of every benchmark's table."""
    m, q = results["machine"], results["quiet_before_start"]
    return [
        ("machine", f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}"),
        (
            "before start",
            ("quiet" if q["quiet"] else "NOT quiet")
            + f" after {q['waited_seconds']:g}s: "
            + ", ".join(f"{n} busy {u['busy']:.0%}" for n, u in q["cpus"].items()),
        ),
    ]


def print_table(results: dict[str, Any]) -> None:
    w = results["workload"]
    t, f = results["throughput"], results["freshness"]
    server_cpu = f"cpu{results['pinning']['server_cpu']}"
    rows: list[tuple[str, str]] = [
        *header_rows(results),
        (
            "pinning",
            f"server CPU {results['pinning']['server_cpu']}, "
            f"generator CPU {results['pinning']['generator_cpu']}",
        ),
        (
            "workload",
            f"{w['events']} events, {w['profiles']} profiles, "
            f"{w['event_bytes_mean']:.0f} B/event, {w['request_bytes_mean']} B/request",
        ),
    ]
    for entry in results.get("generator_ceiling", []):
        rows.append(
            (
                f"generator ceiling ({entry['client']})",
                f"{entry['events_per_s']:,.0f} events/s, {entry['requests_per_s']:,.0f} req/s, "
                f"{entry['generator_us_per_request']:.0f} us CPU/req",
            )
        )
    sc = t["server_cpu"]
    rows += [
        (
            "accepted (2xx, durable)",
            f"{t['accepted_events_per_s']:,.0f} events/s "
            f"({t['requests']['requests_per_s']:,.0f} req/s)",
        ),
        (
            "processed end to end",
            f"{t['end_to_end_events_per_s']:,.0f} events/s "
            f"(drain {t['drain_after_last_ack_seconds']:.2f}s after last ack, "
            f"max lag {t['max_processing_lag_events']:,.0f})",
        ),
        ("batch request latency", _ms(t["requests"]["latency"])),
        ("server CPU", f"{sc['utilisation']:.0%} of a core, {sc['us_per_event']:.1f} us/event"),
    ]
    for name, thread in sc["threads"].items():
        rows.append(
            (f"  {name}", f"{thread['utilisation']:.0%}, {thread['us_per_event']:.1f} us/event")
        )
    rows += [
        (
            f"  {name} (whole machine)",
            f"busy {u['busy']:.0%} (not ours {t['foreign_busy'].get(name, 0):.0%}), "
            f"iowait {u['iowait']:.0%}, steal {u['steal']:.0%}",
        )
        for name, u in t["cpus"].items()
    ]
    rows += [
        (
            "generator CPU",
            f"{t['generator_cpu']['utilisation']:.0%} of a core, "
            f"{t['generator_cpu']['us_per_event']:.2f} us/event",
        ),
        (
            "paced load",
            f"{f['achieved_events_per_s']:,.0f} events/s "
            f"(target {f['target_events_per_s']:,.0f}), batch latency "
            f"{_ms(f['load_requests']['latency'])}",
        ),
        (
            "freshness (2xx -> visible)",
            f"{_ms(f['freshness'])} ms over {f['probes_seen']} probes ({f['probes_lost']} lost)",
        ),
        ("probe send -> visible", _ms(f["send_to_visible"])),
        ("probe 2xx latency", _ms(f["probe_ack_latency"])),
        ("profile polls", f"{f['profile_polls_per_s']:,.0f}/s, {_ms(f['profile_poll_latency'])}"),
        (
            "server CPU at half load",
            f"{f['server_cpu']['utilisation']:.0%} of a core (not ours on {server_cpu}: "
            f"{f['foreign_busy'].get(server_cpu, 0):.0%})",
        ),
        (
            "processing lag at half load",
            f"max {f['processing_lag_events']['max']:,.0f}, "
            f"mean {f['processing_lag_events']['mean']:,.0f}",
        ),
    ]
    rows += [(f"ratio {k}", f"{v:.3f}") for k, v in results["ratios"].items()]
    b = results["bar"]
    rows.append(
        (
            "bar",
            f">= {b['end_to_end_events_per_s_min']:,} events/s: "
            f"{'met' if b['end_to_end_met'] else 'NOT met'}; freshness p99 < "
            f"{b['freshness_p99_ms_max']:g} ms: {'met' if b['freshness_met'] else 'NOT met'}",
        )
    )
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for phase in ("throughput", "freshness"):
        if "profile" in results[phase]:
            print_profile(phase, results[phase]["profile"])


def print_profile(phase: str, profile: dict[str, Any], top: int = 8) -> None:
    """The CPU per thread by category (perf) and the Python lines holding the GIL (py-spy)."""
    native = profile.get("native")
    if native:
        print(f"\n{phase}: server CPU by thread and category (perf, us per event)")
        for thread, found in native["threads"].items():
            parts = ", ".join(
                f"{c['category']} {c['us_per_event']:.1f}" for c in found["categories"][:top]
            )
            print(f"  {thread} {found['cpu_us_per_event']:.1f}: {parts}")
    python = profile.get("python")
    if python:
        print(f"\n{phase}: Python holding the GIL (py-spy, us per event), top lines per thread")
        for thread, found in python["threads"].items():
            print(f"  {thread} {found['gil_us_per_event']:.1f}:")
            for row in found["self_lines"][:top]:
                print(f"    {row['us_per_event']:6.2f}  {row['share']:6.1%}  {row['function']}")
