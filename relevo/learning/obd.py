"""The Open Bandit Dataset sample as Relevo decision-log records.

The ``obp`` package ships a 10,000-row sample of the Open Bandit Dataset (ZOZOTOWN, 80 items,
3 slots) per logging policy (``random``: uniform; ``bts``: Bernoulli Thompson sampling) and
campaign (``all``, ``men``, ``women``) under ``obp/dataset/obd/<policy>/<campaign>/``. It is
found here without importing obp (whose imports pull in torch) and read with the csv module.

Each row is one impression: an item shown at a position with the logging policy's probability
of that choice, and whether it was clicked. It becomes a :class:`LoggedDecision` of its own,
the way Relevo logs a decision: the user's hashed features and the position as categorical
features (``"user_feature_0=<hash>": 1.0``, ``"position=1": 1.0``), the non-zero user-item
affinities as numbers, every item of ``item_context.csv`` as a candidate, the logged item as
the only chosen offer with its propensity (the only probability importance weighting needs),
and the click as feedback.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from relevo.decisions.log import Chosen, DecisionRecord, LoggedDecision

LOGGING_POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
AFFINITY_PREFIX = "user-item_affinity_"
INSTALL_HINT = "pip install --no-deps --ignore-requires-python obp==0.5.7"


def sample_root() -> Path | None:
    """The installed sample's ``obd`` directory, or None when obp is not installed."""
    spec = importlib.util.find_spec("obp")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "obd"
    return root if root.is_dir() else None


def locate(where: str | Path) -> Path:
    """The campaign directory named by ``where``.

    ``where`` is a directory holding ``<campaign>.csv`` and ``item_context.csv``, or
    ``"<policy>/<campaign>"`` (e.g. ``"random/all"``) of the sample installed with obp.
    """
    path = Path(where)
    if path.is_dir():
        _csv_of(path)
        return path
    policy, _, campaign = str(where).partition("/")
    if policy not in LOGGING_POLICIES or campaign not in CAMPAIGNS:
        raise FileNotFoundError(
            f"{where!r} is neither a directory nor one of "
            f"{', '.join(f'{p}/{c}' for p in LOGGING_POLICIES for c in CAMPAIGNS)}"
        )
    root = sample_root()
    if root is None:
        raise FileNotFoundError(f"the Open Bandit Dataset sample is not installed: {INSTALL_HINT}")
    return root / policy / campaign


def read_items(directory: Path) -> list[str]:
    """The campaign's item ids (``item_context.csv``), as strings, in file order."""
    with (directory / "item_context.csv").open(newline="") as file:
        return [row["item_id"] for row in csv.DictReader(file)]


def read_campaign(directory: Path, *, affinities: bool = True) -> Iterator[LoggedDecision]:
    """The campaign's impressions in file (time) order, as logged decisions.

    The placement is ``obd_<campaign>``, the record's policy ``obd:<logging policy>``;
    ``affinities=False`` leaves the user-item affinities out of the features.
    """
    csv_path = _csv_of(directory)
    campaign = directory.name
    placement, policy = f"obd_{campaign}", f"obd:{directory.parent.name}"
    candidates = read_items(directory)
    with csv_path.open(newline="") as file:
        for row in csv.DictReader(file):
            item = row["item_id"]
            position = int(row["position"])
            propensity = float(row["propensity_score"])
            record = DecisionRecord(
                id=f"{policy}:{campaign}:{row['']}",
                at=datetime.fromisoformat(row["timestamp"]),
                placement=placement,
                profile_id=None,
                policy=policy,
                features=_features(row, affinities),
                candidates=candidates,
                probabilities={item: propensity},
                chosen=[Chosen(item, position - 1, propensity, 0.0)],
            )
            clicked = frozenset({item}) if row["click"] == "1" else frozenset()
            yield LoggedDecision(record=record, impressions=frozenset({item}), clicks=clicked)


def _features(row: dict[str, str], affinities: bool) -> dict[str, float]:
    features = {f"{name}={row[name]}": 1.0 for name in USER_FEATURES}
    features[f"position={row['position']}"] = 1.0
    if affinities:
        for name, value in row.items():
            if name.startswith(AFFINITY_PREFIX) and value not in ("0.0", "0"):
                features[name] = float(value)
    return features


def _csv_of(directory: Path) -> Path:
    path = directory / f"{directory.name}.csv"
    if not path.is_file() or not (directory / "item_context.csv").is_file():
        raise FileNotFoundError(f"{directory} holds no {path.name} and item_context.csv")
    return path
