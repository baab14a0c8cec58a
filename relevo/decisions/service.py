"""Decisioning on a node: the catalog (files and admin API), the decide path and its caches.

The decide path reads only memory: the profile from the profile cache (dropped by the
processor on every change), learned models and impression counters refreshed from the store
by a background thread every ``REFRESH_SECONDS``. Decisions are logged by a background writer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from relevo._clock import Clock
from relevo.decisions.caps import COUNTED_SECONDS, HOUR
from relevo.decisions.catalog import (
    Catalog,
    CatalogDefinitions,
    OfferDefinition,
    PlacementDefinition,
    compile_catalog,
    parse_definitions,
)
from relevo.decisions.engine import Decider, DecideRequest, PlacementDecision
from relevo.decisions.experiments import Experiment, rate_interval, uplift
from relevo.decisions.feedback import Attribution, AttributionMap
from relevo.decisions.models import ModelRegistry
from relevo.decisions.recorder import DecisionRecorder
from relevo.errors import NotFound, ValidationError
from relevo.profiles.cache import ProfileCache
from relevo.profiles.identifiers import Identifier
from relevo.profiles.model import Profile
from relevo.store.base import DecisionStore, VariantCounts

log = logging.getLogger(__name__)

Kind = Literal["placement", "offer", "experiment"]
KINDS: tuple[Kind, ...] = ("placement", "offer", "experiment")
_TYPES: dict[Kind, type[Any]] = {
    "placement": PlacementDefinition,
    "offer": OfferDefinition,
    "experiment": Experiment,
}
REFRESH_SECONDS = 0.2
PERSONALISED = "personalised"


@dataclass(frozen=True)
class Decisions:
    profile: Profile | None
    placements: list[PlacementDecision]


class DecisionService:
    def __init__(
        self,
        store: DecisionStore,
        profiles: ProfileCache,
        clock: Clock,
        computed: Callable[[Profile, datetime], dict[str, Any]],
        holdout_percent: float,
        on_catalog: Callable[[Catalog], None] = lambda catalog: None,
    ) -> None:
        self._store = store
        self._profiles = profiles
        self._clock = clock
        self._on_catalog = on_catalog
        self._catalog = Catalog.empty()
        self._stamp: tuple[int, str | None] = (0, None)
        self._models = ModelRegistry()
        self._counters: dict[str, int] = {}
        self._recorder = DecisionRecorder(store)
        self._decider = Decider(
            lambda: self._catalog, self._models, lambda: self._counters, computed, holdout_percent
        )
        self._lock = threading.Lock()  # one catalog change at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self, directory: Path | None) -> None:
        """At start: store the definitions of ``<directory>/decisions/*.yaml`` over the stored
        ones, then compile the whole catalog (a bad definition stops the start)."""
        if directory is not None:
            for path in sorted((directory / "decisions").glob("*.y*ml")):
                definitions = _file_definitions(path)
                with _in_file(path):
                    compile_catalog(_merged(self._definitions(), definitions))
                for kind, item in _items(definitions):
                    self._store_item(kind, item)
        self._install(compile_catalog(self._definitions()))

    def start(self) -> None:
        self.refresh()
        self._recorder.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relevo-decide-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._recorder.close()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                self.refresh()
            except Exception:  # thread boundary: stale models for a moment, not a dead node
                log.exception("refreshing decide state failed")

    def refresh(self) -> None:
        """Reload what changed in the store: the catalog (another node's admin change),
        learned models, impression counters."""
        stamp = self._store.catalog_stamp()
        if stamp != self._stamp:
            with self._lock:
                self._install(compile_catalog(self._definitions()))
        stale = self._models.stale(self._store.policies())
        for stored in self._store.load_policies(stale) if stale else []:
            self._models.install(stored, reseed=True)
        now_hour = int(self._clock.now().timestamp() // HOUR) * HOUR
        self._counters = self._store.impression_counters(now_hour - COUNTED_SECONDS)

    def model_versions(self) -> dict[str, int]:
        """The version of each learnt model this node decides with."""
        return self._models.versions()

    def flush(self) -> None:
        """Wait until the decisions made so far are in the decision log."""
        self._recorder.flush()

    # -- deciding -----------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        return self._catalog

    def decide(self, identifier: Identifier | None, unit: str, request: DecideRequest) -> Decisions:
        """Decide for the profile ``identifier`` names (None: no profile, or none yet);
        ``unit`` is who experiments assign when there is no profile yet."""
        profile = self._profiles.get(identifier) if identifier is not None else None
        if profile is not None:
            request = DecideRequest(request.asks, request.context, profile.id, request.explain)
        else:
            request = DecideRequest(request.asks, request.context, unit, request.explain)
        unknown = [a.placement for a in request.asks if a.placement not in self._catalog.placements]
        if unknown:
            raise NotFound(f"unknown placement(s): {', '.join(unknown)}")
        placements = self._decider.decide(profile, request, self._clock.now())
        for decision in placements:
            self._recorder.record(decision.record)
            for problem in decision.problems:
                log.warning("content of placement %s: %s", decision.placement.id, problem)
        return Decisions(profile, placements)

    # -- the catalog ----------------------------------------------------------------------------

    def items(self, kind: Kind) -> list[Any]:
        definitions = self._definitions()
        return list(_of_kind(definitions, kind))

    def item(self, kind: Kind, item_id: str) -> Any:
        for item in _of_kind(self._definitions(), kind):
            if item.id == item_id:
                return item
        raise NotFound(f"no {kind} {item_id!r}")

    def put(self, kind: Kind, data: Any) -> Any:
        """Create or replace one definition; the whole catalog must still compile."""
        try:
            item = msgspec.convert(data, _TYPES[kind])
        except msgspec.ValidationError as exc:
            raise ValidationError(f"invalid {kind}: {exc}") from exc
        with self._lock:
            definitions = _merged(self._definitions(), _single(kind, item))
            catalog = compile_catalog(definitions)
            self._store_item(kind, item)
            self._install(catalog)
        return item

    def delete(self, kind: Kind, item_id: str) -> None:
        with self._lock:
            definitions = self._definitions()
            remaining = _without(definitions, kind, item_id)
            if remaining == definitions:
                raise NotFound(f"no {kind} {item_id!r}")
            catalog = compile_catalog(remaining)  # e.g. offers still naming a placement
            self._store.delete_catalog_item(kind, item_id)
            self._install(catalog)

    def _definitions(self) -> CatalogDefinitions:
        grouped: dict[str, list[Any]] = {"placements": [], "offers": [], "experiments": []}
        for kind, _, definition in self._store.catalog_items():
            grouped[f"{kind}s"].append(msgspec.json.decode(definition))
        return parse_definitions(grouped)

    def _store_item(self, kind: Kind, item: Any) -> None:
        self._store.put_catalog_item(kind, item.id, msgspec.json.encode(item), self._clock.now())

    def _install(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._stamp = self._store.catalog_stamp()
        self._on_catalog(catalog)

    # -- results ------------------------------------------------------------------------------

    def experiment_results(self, experiment_id: str) -> dict[str, Any]:
        experiment = self._catalog.experiments.get(experiment_id)
        if experiment is None:
            raise NotFound(f"no experiment {experiment_id!r}")
        counts = {
            c.variant: c for c in self._store.variant_counts(experiment_id, experiment.placement)
        }
        names = [v.name for v in experiment.variants]
        control = counts.get(names[0])
        return {
            "experiment": experiment_id,
            "placement": experiment.placement,
            "control": names[0],
            "variants": [_variant_result(name, counts.get(name), control) for name in names],
        }

    def placement_results(self, placement_id: str) -> dict[str, Any]:
        """Personalised (every variant) against the holdout group."""
        if placement_id not in self._catalog.placements:
            raise NotFound(f"no placement {placement_id!r}")
        holdout = None
        personalised = VariantCounts(PERSONALISED, 0, 0, 0, 0, 0.0)
        for c in self._store.variant_counts(None, placement_id):
            if c.variant == "holdout":
                holdout = c
            else:
                personalised = _add(personalised, c)
        return {
            "placement": placement_id,
            "groups": [
                _variant_result(PERSONALISED, personalised, holdout),
                _variant_result("holdout", holdout, None),
            ],
        }


def attribution_of(catalog: Catalog) -> AttributionMap:
    """Conversion event name -> the placements crediting it (for the processor)."""
    found: dict[str, list[Attribution]] = {}
    for placement in catalog.placements.values():
        window = timedelta(seconds=placement.attribution_seconds)
        for name in placement.definition.conversion_events:
            found.setdefault(name, []).append(Attribution(placement.id, window))
    return {name: tuple(rules) for name, rules in found.items()}


def _variant_result(
    name: str, counts: VariantCounts | None, baseline: VariantCounts | None
) -> dict[str, Any]:
    c = counts or VariantCounts(name, 0, 0, 0, 0, 0.0)
    result: dict[str, Any] = {
        "name": name,
        "decisions": c.decisions,
        "impressions": c.impressions,
        "clicks": c.clicks,
        "conversions": c.conversions,
        "conversion_value": c.conversion_value,
        "click_rate": _rate(c.clicks, c.impressions),
        "conversion_rate": _rate(c.conversions, c.impressions),
    }
    if baseline is not None and baseline is not counts:
        result["click_uplift"] = msgspec.to_builtins(
            uplift(c.clicks, c.impressions, baseline.clicks, baseline.impressions)
        )
        result["conversion_uplift"] = msgspec.to_builtins(
            uplift(c.conversions, c.impressions, baseline.conversions, baseline.impressions)
        )
    return result


def _rate(successes: int, trials: int) -> dict[str, float] | None:
    if trials == 0:
        return None
    rate, low, high = rate_interval(successes, trials)
    return {"rate": rate, "low": low, "high": high}


def _add(a: VariantCounts, b: VariantCounts) -> VariantCounts:
    return VariantCounts(
        a.variant,
        a.decisions + b.decisions,
        a.impressions + b.impressions,
        a.clicks + b.clicks,
        a.conversions + b.conversions,
        a.conversion_value + b.conversion_value,
    )


def _of_kind(definitions: CatalogDefinitions, kind: Kind) -> list[Any]:
    return list(getattr(definitions, f"{kind}s"))


def _single(kind: Kind, item: Any) -> CatalogDefinitions:
    return CatalogDefinitions(**{f"{kind}s": [item]})


def _items(definitions: CatalogDefinitions) -> Iterator[tuple[Kind, Any]]:
    for kind in KINDS:
        for item in _of_kind(definitions, kind):
            yield kind, item


def _merged(base: CatalogDefinitions, new: CatalogDefinitions) -> CatalogDefinitions:
    """``base`` with the items of ``new`` added or replacing those with the same id."""
    merged: dict[str, list[Any]] = {}
    for kind in KINDS:
        replacing = {item.id: item for item in _of_kind(new, kind)}
        kept = [item for item in _of_kind(base, kind) if item.id not in replacing]
        merged[f"{kind}s"] = [*kept, *replacing.values()]
    return CatalogDefinitions(**merged)


def _without(definitions: CatalogDefinitions, kind: Kind, item_id: str) -> CatalogDefinitions:
    items = {k: _of_kind(definitions, k) for k in KINDS}
    items[kind] = [item for item in items[kind] if item.id != item_id]
    return CatalogDefinitions(**{f"{k}s": v for k, v in items.items()})


def _file_definitions(path: Path) -> CatalogDefinitions:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path}: not valid YAML: {exc}") from exc
    with _in_file(path):
        return parse_definitions(data, path.name)


@contextmanager
def _in_file(path: Path) -> Iterator[None]:
    try:
        yield
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc.message}", details=exc.details) from exc
