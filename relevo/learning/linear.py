"""Per-arm ridge regression: the statistics behind LinUCB, linear Thompson sampling and the
propensity model that predicts each offer's reward for a context.

For arm ``a`` with trials ``(x_i, r_i)``: ``A_a = ridge * I + sum x_i x_i^T``,
``b_a = sum r_i x_i`` and ``theta_a = A_a^-1 b_a``. ``A_a^-1`` is kept directly and updated by
Sherman-Morrison (O(d^2) a trial, never an inversion); ``x^T A_a^-1 x`` is the uncertainty of
the arm's prediction for ``x`` (with Gaussian noise ``v``, the posterior variance of
``theta_a . x`` is ``v^2 x^T A_a^-1 x``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import msgspec
import numpy as np

from relevo.learning.arms import ArmTable, ArmTableState, FloatArray, Rows, check_reward
from relevo.learning.codec import decode, encode
from relevo.learning.policy import Vector


def check_dim(dim: int) -> None:
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")


def check_context(context: Vector, dim: int) -> None:
    if context.shape != (dim,):
        raise ValueError(f"context must be a vector of length {dim}, got shape {context.shape}")


class RidgeArms:
    """Disjoint ridge regressions, one an action, stacked so K arms score in two matrix products."""

    def __init__(self, dim: int, ridge: float) -> None:
        check_dim(dim)
        if not ridge > 0:
            raise ValueError(f"ridge must be positive, got {ridge}")
        self.dim = dim
        self.ridge = ridge
        self._table = ArmTable(
            {"a_inv": np.eye(dim) / ridge, "b": np.zeros(dim), "theta": np.zeros(dim)}
        )

    def rows(self, actions: Sequence[str]) -> Rows:
        return self._table.rows(actions)

    def means(self, rows: Rows, context: Vector) -> FloatArray:
        """``theta_a . x`` for each row."""
        theta = self._table.array("theta")
        return (theta @ context)[rows] if self._most(rows) else theta[rows] @ context

    def widths(self, rows: Rows, context: Vector) -> FloatArray:
        """``x^T A_a^-1 x`` for each row."""
        a_inv = self._table.array("a_inv")
        if self._most(rows):
            arms, dim = len(a_inv), self.dim
            spread = (a_inv.reshape(arms * dim, dim) @ context).reshape(arms, dim)
            widths = (spread @ context)[rows]
        else:
            widths = (a_inv[rows] @ context) @ context
        return np.maximum(widths, 0.0)  # rounding can leave a tiny negative width

    def _most(self, rows: Rows) -> bool:
        """Whether most arms are asked for: then one product over every arm and a gather of the
        results beats gathering each asked arm's d x d matrix first."""
        return 3 * len(rows) >= len(self._table)

    def learn_one(self, context: Vector, action: str, reward: float) -> None:
        check_context(context, self.dim)
        check_reward(reward)
        row = self._table.row(action)
        a_inv = self._table.array("a_inv")[row]
        spread = a_inv @ context
        a_inv -= np.outer(spread, spread) / (1.0 + context @ spread)
        self._add_to_b(row, context, reward)

    def add_reward(self, context: Vector, action: str, reward: float) -> None:
        check_context(context, self.dim)
        check_reward(reward)
        row = self._table.find(action)
        if row is None:
            raise ValueError(f"no trial of {action!r} to add a reward to")
        self._add_to_b(row, context, reward)

    def _add_to_b(self, row: int, context: Vector, reward: float) -> None:
        b = self._table.array("b")[row]
        b += reward * context
        self._table.array("theta")[row] = self._table.array("a_inv")[row] @ b

    def to_state(self) -> ArmTableState:
        return self._table.to_state()

    def restore(self, state: ArmTableState) -> None:
        self._table.restore(state)


class RidgeModelState(msgspec.Struct, frozen=True, tag="ridge"):
    dim: int
    ridge: float
    arms: ArmTableState


class RidgeModel:
    """Predicts each action's expected reward for a context; no exploration.

    Used to weigh offers (propensity x value x lever) and as the reward model of doubly robust
    off-policy evaluation. A never-seen action predicts 0 (the prior mean).
    """

    def __init__(self, dim: int, *, ridge: float = 1.0) -> None:
        self._arms = RidgeArms(dim, ridge)

    @property
    def dim(self) -> int:
        return self._arms.dim

    def predict(self, context: Vector, actions: Sequence[str]) -> dict[str, float]:
        check_context(context, self.dim)
        means = self._arms.means(self._arms.rows(actions), context)
        return dict(zip(actions, means.tolist(), strict=True))

    def learn_one(self, context: Vector, action: str, reward: float) -> None:
        self._arms.learn_one(context, action, reward)

    def add_reward(self, context: Vector, action: str, reward: float) -> None:
        self._arms.add_reward(context, action, reward)

    def to_bytes(self) -> bytes:
        arms = self._arms
        return encode(RidgeModelState(dim=arms.dim, ridge=arms.ridge, arms=arms.to_state()))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        state = decode(data, RidgeModelState)
        model = cls(state.dim, ridge=state.ridge)
        model._arms.restore(state.arms)
        return model
