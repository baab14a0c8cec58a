"""Context vectors for the contextual bandits: flatten a profile and request, then hash.

``flatten`` turns nested JSON-like data into named features: a categorical is ``"name=value"``
with value 1.0, a number is ``"name"`` with its value. ``FeatureHasher`` maps those names to a
fixed-length vector with signed feature hashing, so new traits, segments and devices need no
schema change and the model size stays ``dim`` whatever the vocabulary.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from relevo.learning.policy import Vector

_MAX_CACHED_NAMES = 1 << 16


def flatten(raw: Mapping[str, Any]) -> dict[str, float]:
    """Named features of nested JSON-like data; nested keys are joined with dots.

    - a string ``s`` under ``name`` gives ``"name=s": 1.0``;
    - a bool gives ``"name=true"`` or ``"name=false"``: 1.0, a category rather than a number, so
      an explicit false is told apart from an absent value;
    - a finite int or float gives ``"name": value`` (NaN and infinities are left out);
    - a list (or tuple, set) gives one ``"name=item": 1.0`` per string, bool or number in it;
      nested lists and objects inside a list are not features and are left out;
    - None is left out.

    Numbers are used as given: bring large ones to about unit scale (or bucket them into
    categories) before relying on them, as the hasher does not rescale single features.

    Raises:
        TypeError: for a value that is not JSON-like (for example a ``datetime``).
    """
    features: dict[str, float] = {}
    for key, value in raw.items():
        flatten_into(features, str(key), value)
    return features


def flatten_into(features: dict[str, float], name: str, value: Any) -> None:
    """Add the features of ``value`` under ``name`` to ``features`` (see :func:`flatten`)."""
    if value is None:
        return
    if value.__class__ is dict or isinstance(value, Mapping):
        for key, nested in value.items():
            flatten_into(features, f"{name}.{key}", nested)
    elif isinstance(value, str | bool):
        features[f"{name}={_category(value)}"] = 1.0
    elif isinstance(value, int | float):
        if math.isfinite(value):
            features[name] = float(value)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            if isinstance(item, str | bool | int | float):
                features[f"{name}={_category(item)}"] = 1.0
    else:
        raise TypeError(f"feature {name!r} has a {type(value).__name__}, not a JSON value")


def _category(value: str | bool | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Slot(NamedTuple):
    """Where a feature name lands: its column, its sign and the interaction prefixes it has."""

    column: int
    sign: float
    groups: tuple[int, ...]


class Encoded(NamedTuple):
    """Features hashed to (column, signed value) pairs, with the members of each interaction
    prefix kept for crossing."""

    indices: list[int]
    values: list[float]
    members: list[list[tuple[str, float]]]


class FeatureHasher:
    """Flattened features to a dense float64 vector of length ``dim``.

    - Index 0 is a constant bias of 1.0; no feature hashes there, so each arm learns its own
      base rate exactly.
    - Each other feature is hashed (BLAKE2b of its UTF-8 name: stable across processes, machines
      and Python versions) to one of the ``dim - 1`` other indices with a sign of +-1, so
      colliding features cancel on average instead of adding up.
    - ``interactions`` are pairs of prefixes; every feature of the first crossed with every
      feature of the second adds a feature ``"a*b"`` with the product of their values. A feature
      has prefix ``p`` if its name is ``p`` or starts with ``p=`` or ``p.``: ``("segment",
      "context.device")`` crosses every ``segment=...`` with every ``context.device=...``.
    - The hashed features (not the bias) are scaled to unit L2 norm. A profile with 40 features
      then gets the same exploration bonus as an anonymous visitor with 2 instead of a bonus
      that grows with its feature count, and ``alpha`` and ``ridge`` keep one meaning for every
      context. The bias stays 1 so the intercept is never shrunk.
    """

    def __init__(self, dim: int, interactions: Sequence[tuple[str, str]] = ()) -> None:
        if dim < 2:
            raise ValueError(f"dim must be at least 2 (a bias and one feature), got {dim}")
        self.dim = dim
        self.interactions = tuple((first, second) for first, second in interactions)
        self._prefixes = sorted({prefix for pair in self.interactions for prefix in pair})
        group = {prefix: number for number, prefix in enumerate(self._prefixes)}
        self._pairs = [(group[first], group[second]) for first, second in self.interactions]
        self._slots: dict[str, _Slot] = {}

    def transform(self, features: Mapping[str, float]) -> Vector:
        """The vector of ``features`` (as produced by :func:`flatten`)."""
        return self.vector(self.encode(features))

    def encode(self, features: Mapping[str, float]) -> Encoded:
        """The hashed form of some features, before crossing and scaling: the part of a
        context that does not change (a profile's) is encoded once and reused with
        :meth:`vector`."""
        slots = self._slots
        indices: list[int] = []
        values: list[float] = []
        members: list[list[tuple[str, float]]] = [[] for _ in self._prefixes]
        for name, value in features.items():
            slot = slots.get(name) or self._slot(name)
            indices.append(slot.column)
            values.append(slot.sign * value)
            for number in slot.groups:
                members[number].append((name, value))
        return Encoded(indices, values, members)

    def vector(self, *parts: Encoded) -> Vector:
        """The vector of the features of ``parts`` together (their names must not overlap)."""
        indices = [0]  # the bias slot, weighted 0 until the end: bincount needs an index
        values = [0.0]
        for part in parts:
            indices += part.indices
            values += part.values
        if len(parts) == 1:
            members = parts[0].members
        else:
            members = [
                [m for part in parts for m in part.members[g]] for g in range(len(self._prefixes))
            ]
        slots = self._slots
        for first, second in self._pairs:
            for (name_a, value_a), (name_b, value_b) in _crossed(members, first, second):
                cross = f"{name_a}*{name_b}"
                slot = slots.get(cross) or self._slot(cross)
                indices.append(slot.column)
                values.append(slot.sign * value_a * value_b)
        # bincount with weights sums in float64 (its stubs only know the unweighted int result)
        vector = np.asarray(np.bincount(indices, weights=values, minlength=self.dim), np.float64)
        norm = math.sqrt(vector @ vector)
        if not math.isfinite(norm):
            raise ValueError("feature values must be finite")
        if norm > 0.0:
            vector /= norm
        vector[0] = 1.0
        return vector

    def _slot(self, name: str) -> _Slot:
        digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        groups = tuple(
            number
            for number, prefix in enumerate(self._prefixes)
            if name == prefix or name.startswith((f"{prefix}=", f"{prefix}."))
        )
        slot = _Slot(1 + digest % (self.dim - 1), -1.0 if digest >> 63 else 1.0, groups)
        if len(self._slots) >= _MAX_CACHED_NAMES:  # unbounded vocabularies: start afresh
            self._slots.clear()
        self._slots[name] = slot
        return slot


def _crossed(
    members: list[list[tuple[str, float]]], first: int, second: int
) -> Iterable[tuple[tuple[str, float], tuple[str, float]]]:
    """The pairs to cross: each unordered pair once when both prefixes are the same."""
    if first == second:
        return itertools.combinations(members[first], 2)
    return ((a, b) for a, b in itertools.product(members[first], members[second]) if a[0] != b[0])
