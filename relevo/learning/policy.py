"""The estimator shape every arbitration policy follows.

A policy picks among the actions (offer ids) eligible for one decision, given a context vector
(the hashed features of the profile and the request; non-contextual policies ignore it), and
learns from the rewards that come back. Every policy is seeded (same seed, same inputs, same
choices) and serialisable (``to_bytes``/``from_bytes`` round-trip the learned state).

The probability of each action is part of the choice: it is logged with the decision so any
other policy can be evaluated offline from the log (inverse propensity weighting). Every
eligible action keeps at least ``floor / len(actions)`` of probability, so no logged
propensity is ever so small that an evaluation is left with a handful of usable rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Choice:
    """What a policy chose.

    Attributes:
        ranking: every given action, best first (the first is the one served in a one-slot
            placement; the next fill further slots).
        probabilities: for each given action, the probability that the policy puts it first
            (they sum to 1; each is at least the floor share).
        scores: the policy's score of each action (estimated reward, upper bound or sample),
            for explanations.
    """

    ranking: list[str]
    probabilities: dict[str, float]
    scores: dict[str, float]


class Policy(Protocol):
    def choose(self, context: Vector, actions: Sequence[str]) -> Choice:
        """Rank ``actions`` (non-empty, distinct) for ``context``; never-seen actions are fine."""
        ...

    def learn_one(self, context: Vector, action: str, reward: float) -> None:
        """Learn from one trial: ``action`` was shown in ``context`` and earned ``reward``."""
        ...

    def add_reward(self, context: Vector, action: str, reward: float) -> None:
        """Add ``reward`` to a trial already learnt with ``learn_one`` (a click that arrives
        after the impression was counted with reward 0), without counting a second trial."""
        ...

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed``, keeping what was learnt (a decide node that
        loads the learner's state reseeds it so it does not replay the learner's draws)."""
        ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self: ...
