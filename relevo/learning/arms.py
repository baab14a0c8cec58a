"""Per-action state as stacked numpy arrays: one row an action, rows added as actions appear."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from relevo.learning.codec import StateError, array_from_bytes, array_to_bytes

FloatArray = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]

_INITIAL_CAPACITY = 8


class ArmTableState(msgspec.Struct, frozen=True):
    """An :class:`ArmTable` as bytes: the action of each row and each array in ``.npy``."""

    names: list[str]
    arrays: dict[str, bytes]


class ArmTable:
    """Named rows of stacked arrays: row ``i`` of every array belongs to action ``names[i]``.

    An action gets its rows on first sight, set to each array's initial value (new offers appear
    at any time). Capacity doubles as actions are added, so scoring K actions is one gather and
    a few vectorised operations, never a Python loop over arms.
    """

    def __init__(self, initial: Mapping[str, FloatArray]) -> None:
        """``initial`` maps each array's name to the value of a new action's row."""
        self._initial = {name: np.asarray(row, dtype=np.float64) for name, row in initial.items()}
        self._index: dict[str, int] = {}
        self._arrays = {
            name: np.empty((_INITIAL_CAPACITY, *row.shape)) for name, row in self._initial.items()
        }

    def __len__(self) -> int:
        return len(self._index)

    @property
    def names(self) -> list[str]:
        return list(self._index)

    def array(self, name: str) -> FloatArray:
        """The rows of every known action (a view: writes update the table)."""
        return self._arrays[name][: len(self._index)]

    def find(self, action: str) -> int | None:
        """The row of ``action``, or None if it was never seen."""
        return self._index.get(action)

    def row(self, action: str) -> int:
        """The row of ``action``, added with the initial values if it is new."""
        found = self._index.get(action)
        return self._add(action) if found is None else found

    def rows(self, actions: Sequence[str]) -> Rows:
        """The rows of ``actions`` in order, adding the new ones."""
        index = self._index
        try:
            return np.array([index[action] for action in actions], dtype=np.intp)
        except KeyError:
            return np.array([self.row(action) for action in actions], dtype=np.intp)

    def to_state(self) -> ArmTableState:
        return ArmTableState(
            names=self.names,
            arrays={name: array_to_bytes(self.array(name)) for name in self._arrays},
        )

    def restore(self, state: ArmTableState) -> None:
        """Replace every row with those of ``state``, checking it holds the same arrays."""
        if set(state.arrays) != set(self._initial):
            raise StateError(f"arrays {sorted(state.arrays)}, expected {sorted(self._initial)}")
        if len(set(state.names)) != len(state.names):
            raise StateError("duplicate action names")
        arrays = {}
        for name, row in self._initial.items():
            array = array_from_bytes(state.arrays[name])
            if array.dtype != np.float64 or array.shape != (len(state.names), *row.shape):
                raise StateError(f"array {name!r} has shape {array.shape} and type {array.dtype}")
            arrays[name] = np.concatenate([array, np.empty((_INITIAL_CAPACITY, *row.shape))])
        self._arrays = arrays
        self._index = {action: row for row, action in enumerate(state.names)}

    def _add(self, action: str) -> int:
        row = len(self._index)
        for name, initial in self._initial.items():
            array = self._arrays[name]
            if row == len(array):
                array = np.concatenate([array, np.empty_like(array)])
                self._arrays[name] = array
            array[row] = initial
        self._index[action] = row
        return row


def check_actions(actions: Sequence[str]) -> None:
    """Actions to choose among must be given, each once."""
    if not actions:
        raise ValueError("no actions to choose among")
    if len(set(actions)) != len(actions):
        raise ValueError("actions must be distinct")


def check_reward(reward: float) -> None:
    """A non-finite reward would poison the learned state for good."""
    if not math.isfinite(reward):
        raise ValueError(f"reward must be finite, got {reward}")
