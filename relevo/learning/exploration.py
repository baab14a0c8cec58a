"""From scores to a logged choice: first-place probabilities, the floor, and the draw.

Every policy ends the same way. It states the probability with which it would put each action
first, mixes in the floor (``floor / K`` for every action, so offline evaluation always has usable
propensities), draws the served action from exactly that distribution and logs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from relevo.learning.arms import FloatArray
from relevo.learning.policy import Choice


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def check_draws(draws: int) -> None:
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")


def argmax_share(scores: FloatArray) -> FloatArray:
    """Probability 1 on the best score, split equally between ties (e.g. never-seen arms)."""
    top = float(scores.max())
    best = scores >= top - 1e-12 * max(1.0, abs(top))
    shares: FloatArray = best * (1.0 / np.count_nonzero(best))
    return shares


def first_place_share(samples: FloatArray) -> FloatArray:
    """How often each column is the largest of a row: a Monte Carlo ``P(first)`` over draws."""
    draws, actions = samples.shape
    shares: FloatArray = np.bincount(samples.argmax(axis=1), minlength=actions) / draws
    return shares


def with_floor(probabilities: FloatArray, floor: float) -> FloatArray:
    """Mix ``floor`` of the mass uniformly, so each action gets at least ``floor / K``."""
    mixed: FloatArray = (1.0 - floor) * probabilities + floor / len(probabilities)
    return mixed


def serve(
    rng: np.random.Generator,
    actions: Sequence[str],
    probabilities: FloatArray,
    scores: FloatArray,
) -> Choice:
    """Draw the served action from ``probabilities`` and rank the others by ``scores``."""
    cumulative = probabilities.cumsum()
    drawn = int(cumulative.searchsorted(rng.random() * cumulative[-1], side="right"))
    served = min(drawn, len(actions) - 1)
    ranking = [actions[served]]
    ranking += [actions[i] for i in (-scores).argsort(kind="stable").tolist() if i != served]
    return Choice(
        ranking=ranking,
        probabilities=dict(zip(actions, probabilities.tolist(), strict=True)),
        scores=dict(zip(actions, scores.tolist(), strict=True)),
    )
