"""``relevo ope``: how a policy would have done on a placement's decision log, before it goes
live (off-policy evaluation: IPS, SNIPS, doubly robust)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click

from relevo.cli.context import settings_from, store_option
from relevo.decisions.evaluate import EvaluationReport, PolicySpec, evaluate
from relevo.decisions.log import DecisionLogReader, LoggedDecision
from relevo.learning import obd
from relevo.learning.bandits import ALGORITHMS
from relevo.learning.features import FeatureHasher
from relevo.learning.ope import EstimatorOptions
from relevo.store.registry import open_store


@contextmanager
def open_decision_log(store_url: str | None) -> Iterator[DecisionLogReader]:
    """The decision log of the configured store (read only: the event log is not opened)."""
    store = open_store(settings_from(store_url=store_url).store_url)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def _moment(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param=param) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("ope")
@click.option("--placement", default=None, help="The placement whose decision log to read.")
@click.option(
    "--obd",
    "obd_sample",
    default=None,
    metavar="DIR_OR_CAMPAIGN",
    help="Evaluate on the Open Bandit Dataset sample instead of the store: a campaign "
    "directory, or random/all, bts/men ... of the sample installed with obp.",
)
@click.option(
    "--policy",
    "algorithm",
    type=click.Choice(ALGORITHMS),
    default="lints",
    show_default=True,
    help="The candidate policy.",
)
@click.option("--alpha", type=float, default=None, help="LinUCB's exploration bonus.")
@click.option("--epsilon", type=float, default=None, help="Epsilon-greedy's exploration.")
@click.option("--noise", type=float, default=None, help="Linear Thompson's posterior scale.")
@click.option("--floor", type=float, default=None, help="Probability floor (share of 1/K).")
@click.option("--ridge", type=float, default=None, help="Ridge of the linear policies.")
@click.option("--dim", type=int, default=64, show_default=True, help="Context vector length.")
@click.option("--since", callback=_moment, default=None, help="Only decisions from (ISO time).")
@click.option("--until", callback=_moment, default=None, help="Only decisions before (ISO time).")
@click.option(
    "--train-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.7,
    show_default=True,
    help="The earlier share of the log to train on; the rest is evaluated.",
)
@click.option(
    "--reward",
    type=click.Choice(["click", "conversion"]),
    default="click",
    show_default=True,
)
@click.option(
    "--level",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence level of the intervals.",
)
@click.option(
    "--max-weight",
    type=click.FloatRange(0.0, min_open=True),
    default=None,
    help="Clip importance weights at this value (biases the estimates; default: no clipping).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@store_option
def ope(
    placement: str | None,
    obd_sample: str | None,
    algorithm: str,
    alpha: float | None,
    epsilon: float | None,
    noise: float | None,
    floor: float | None,
    ridge: float | None,
    dim: int,
    since: datetime | None,
    until: datetime | None,
    train_fraction: float,
    reward: str,
    level: float,
    max_weight: float | None,
    seed: int,
    as_json: bool,
    store_url: str | None,
) -> None:
    """Estimate a policy offline on a decision log: trained on the earlier part, estimated on
    the rest with IPS, SNIPS and doubly robust, beside the logged policy's own rate."""
    settings = {"alpha": alpha, "epsilon": epsilon, "noise": noise, "floor": floor, "ridge": ridge}
    candidate = PolicySpec(algorithm, {k: v for k, v in settings.items() if v is not None})

    def run(logged: Iterable[LoggedDecision]) -> EvaluationReport:
        return evaluate(
            logged,
            candidate,
            hasher=FeatureHasher(dim),
            train_fraction=train_fraction,
            reward="conversion" if reward == "conversion" else "click",
            seed=seed,
            options=EstimatorOptions(level=level, max_weight=max_weight),
        )

    try:
        if placement is not None and obd_sample is None:
            with open_decision_log(store_url) as reader:
                report = run(reader.logged(placement, since, until))
        elif obd_sample is not None and placement is None and since is None and until is None:
            report = run(obd.read_campaign(obd.locate(obd_sample)))
        else:
            raise click.UsageError("name --placement (with --since, --until) or --obd")
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
