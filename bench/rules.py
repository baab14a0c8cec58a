"""Rule evaluation speed: a compiled rule evaluated ``n`` times over one profile's data.

Run with ``python -m bench.rules``. Reports microseconds per evaluation (best of ``repeats``
runs of ``n`` evaluations, so a noisy neighbour inflates no figure) for a realistic segment
rule and two smaller ones, and milliseconds to compile (parse + validate + compile) a rule.
Not wired into ``relevo bench`` yet.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from relevo.rules import compile_rule

REALISTIC = (
    'traits.plan in ["gold", "platinum"] and computed.orders_30d >= 3'
    ' and profile.last_seen >= now() - days(30) and "vip" in segments'
    ' and not traits.email ends_with "@test.example" and event_count("Product Viewed") > 2'
)
RULES = {
    "realistic (6 clauses)": REALISTIC,
    "one equality": 'traits.plan == "gold"',
    "regex + arithmetic": 'traits.email matches "(?i)@acme\\\\.com$" and computed.ltv / 2 > 50',
}
DATA: dict[str, Any] = {
    "traits": {"plan": "gold", "email": "ada@acme.com", "age": 36},
    "computed": {"orders_30d": 4, "ltv": 120.0},
    "profile": {
        "last_seen": datetime(2026, 2, 20, tzinfo=UTC),
        "event_counts": {"Product Viewed": 7, "Order Completed": 2},
    },
    "event": None,
    "context": {},
    "segments": {"vip", "newsletter"},
    "now": datetime(2026, 3, 1, tzinfo=UTC),
}


def _per_evaluation_us(source: str, n: int, repeats: int) -> float:
    evaluate = compile_rule(source).evaluate
    assert evaluate(DATA), source  # every rule holds, so no clause is skipped
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            evaluate(DATA)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def _compile_ms(source: str, repeats: int = 200) -> float:
    compile_rule(source)  # the parser is built on first use
    start = time.perf_counter()
    for _ in range(repeats):
        compile_rule(source)
    return (time.perf_counter() - start) / repeats * 1e3


def run(n: int = 100_000, repeats: int = 5) -> dict[str, Any]:
    """Time the rules, print a table and return the figures."""
    results: dict[str, Any] = {
        "n": n,
        "repeats": repeats,
        "evaluate_us": {
            name: round(_per_evaluation_us(s, n, repeats), 3) for name, s in RULES.items()
        },
        "compile_ms": round(_compile_ms(REALISTIC), 3),
    }
    print(f"{'rule':<24} {'µs / evaluation':>16}")
    for name, micros in results["evaluate_us"].items():
        print(f"{name:<24} {micros:>16.2f}")
    print(f"{'compile (realistic)':<24} {results['compile_ms']:>13.2f} ms")
    return results


if __name__ == "__main__":
    run()
