"""The learned state of each placement: its bandit, its shadow bandit, its propensity model.

Both sides hold one: the learner updates its own and saves them (each save is a new version);
decide nodes reload a model when its stored version changes. A model is named after its
placement, its role and a digest of its settings, so a changed setting starts a fresh model
instead of loading a state of another shape.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

from relevo.decisions.catalog import Placement
from relevo.learning.bandits import build_policy, load_policy
from relevo.learning.linear import RidgeModel
from relevo.learning.policy import Policy
from relevo.store.base import StoredPolicy

Role = Literal["bandit", "shadow", "propensity"]
PROPENSITY = "ridge"


@dataclass
class _Entry:
    algorithm: str
    model: Policy | RidgeModel
    version: int = 0


def model_name(placement: Placement, role: Role) -> str:
    digest = placement.shadow_digest if role == "shadow" else placement.bandit_digest
    return f"{placement.id}/{role}/{digest}"


class ModelRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def policy(self, placement: Placement) -> Policy:
        return self._policy(placement, "bandit")

    def shadow(self, placement: Placement) -> Policy:
        return self._policy(placement, "shadow")

    def propensity(self, placement: Placement) -> RidgeModel:
        name = model_name(placement, "propensity")
        entry = self._entries.get(name)
        if entry is None:
            bandit = placement.definition.bandit
            entry = self._entries[name] = _Entry(
                PROPENSITY, RidgeModel(bandit.dim, ridge=bandit.ridge)
            )
        assert isinstance(entry.model, RidgeModel)
        return entry.model

    def _policy(self, placement: Placement, role: Role) -> Policy:
        name = model_name(placement, role)
        entry = self._entries.get(name)
        if entry is None:
            bandit = (
                placement.definition.shadow if role == "shadow" else placement.definition.bandit
            )
            assert bandit is not None
            policy = build_policy(
                bandit.algorithm,
                dim=bandit.dim,
                seed=bandit.seed,
                floor=bandit.floor,
                alpha=bandit.alpha,
                epsilon=bandit.epsilon,
                noise=bandit.noise,
                ridge=bandit.ridge,
            )
            entry = self._entries[name] = _Entry(bandit.algorithm, policy)
        assert not isinstance(entry.model, RidgeModel)
        return entry.model

    def states(self, names: set[str]) -> dict[str, tuple[str, bytes]]:
        """The named models' states, to save."""
        return {
            name: (self._entries[name].algorithm, self._entries[name].model.to_bytes())
            for name in names
        }

    def versions(self) -> dict[str, int]:
        return {name: entry.version for name, entry in self._entries.items()}

    def stale(self, versions: dict[str, int]) -> list[str]:
        """The stored models newer than the ones held."""
        return [
            name
            for name, version in versions.items()
            if name not in self._entries or self._entries[name].version < version
        ]

    def install(self, stored: StoredPolicy, *, reseed: bool) -> None:
        """Take a stored model. A decide node reseeds what it loads (from the seed in the
        state and the version) so each reload does not replay the learner's random stream."""
        if stored.algorithm == PROPENSITY:
            model: Policy | RidgeModel = RidgeModel.from_bytes(stored.state)
        else:
            policy = load_policy(stored.algorithm, stored.state)
            if reseed:
                policy.reseed(zlib.crc32(f"{stored.name}/{stored.version}".encode()))
            model = policy
        self._entries[stored.name] = _Entry(stored.algorithm, model, stored.version)
