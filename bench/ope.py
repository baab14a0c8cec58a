"""``relevo bench ope``: Relevo's policies evaluated off-policy on the Open Bandit Dataset sample.

For each campaign (default: ``random/all``, logged by a uniformly random policy, and
``bts/all``, logged by Bernoulli Thompson sampling; 10,000 impressions each, 80 items), each of
Relevo's policies is trained on the first ``train_fraction`` of the impressions (every row, see
``relevo.decisions.evaluate``) and estimated on the rest with IPS, SNIPS and doubly robust,
beside the logging policy's own click rate on the same rows. The figures are statistics, not
timings: the run is deterministic for a seed, and the wall time of each evaluation is recorded
only to show what ``relevo ope`` costs.

Results are printed as a table and written as JSON to ``out``.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench._measure import machine, source_state
from relevo.decisions.evaluate import EvaluationReport, PolicySpec, evaluate
from relevo.learning import obd
from relevo.learning.features import FeatureHasher
from relevo.learning.ope import render_table

CAMPAIGNS = ("random/all", "bts/all")
# LinUCB with a small bonus: at a 0.4 % click rate alpha = 0.1 already swamps the means
POLICIES = (
    PolicySpec("lints"),
    PolicySpec("linucb", {"alpha": 0.01}),
    PolicySpec("epsilon_greedy"),
    PolicySpec("thompson"),
)


Evaluations = list[tuple[EvaluationReport, float]]  # each policy's report, and its seconds


def run(
    *,
    campaigns: tuple[str, ...] = CAMPAIGNS,
    dim: int = 64,
    train_fraction: float = 0.7,
    seed: int = 0,
    out: str = "bench/results/ope.json",
) -> dict[str, Any]:
    evaluated = [
        (campaign, evaluate_campaign(campaign, dim, train_fraction, seed)) for campaign in campaigns
    ]
    results: dict[str, Any] = {
        "benchmark": "ope",
        "command": shlex.join(["relevo", "bench", "ope", *sys.argv[3:]]),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source_state(Path(__file__).resolve().parent.parent),
        "settings": {"dim": dim, "train_fraction": train_fraction, "seed": seed},
        "campaigns": [_campaign_results(campaign, found) for campaign, found in evaluated],
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(results)) + b"\n")
    print_table(results["machine"], evaluated)
    print(f"\nwrote {path}")
    return results


def evaluate_campaign(campaign: str, dim: int, train_fraction: float, seed: int) -> Evaluations:
    logged = list(obd.read_campaign(obd.locate(campaign)))
    evaluations = []
    for policy in POLICIES:
        started = time.perf_counter()
        report = evaluate(
            logged, policy, hasher=FeatureHasher(dim), train_fraction=train_fraction, seed=seed
        )
        evaluations.append((report, time.perf_counter() - started))
    return evaluations


def _campaign_results(campaign: str, evaluations: Evaluations) -> dict[str, Any]:
    first = evaluations[0][0]
    return {
        "campaign": campaign,
        "logged_by": first.logged_by,
        "train": first.train.to_dict(),
        "test": first.test.to_dict(),
        "logged": first.logged.to_dict(),
        "policies": [
            {
                "policy": report.policy,
                "seconds": round(seconds, 3),
                "estimates": [estimate.to_dict() for estimate in report.estimates],
            }
            for report, seconds in evaluations
        ],
    }


def print_table(found_on: dict[str, Any], evaluated: list[tuple[str, Evaluations]]) -> None:
    print(f"\nmachine: {found_on['nproc']} x {found_on['cpu_model']}, Python {found_on['python']}")
    for campaign, evaluations in evaluated:
        first = evaluations[0][0]
        print(
            f"\n{campaign} (logged by {', '.join(first.logged_by)}): trained on "
            f"{first.train.decisions:,} impressions ({first.train.rewards} clicks), estimated "
            f"on {first.test.decisions:,} ({first.test.rewards} clicks); click rates in %\n"
        )
        rows = [first.logged]
        for report, _ in evaluations:
            rows += [
                dataclasses.replace(e, estimator=f"{report.policy} {e.estimator}")
                for e in report.estimates
            ]
        print(render_table(rows))
