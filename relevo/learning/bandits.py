"""The arbitration policies: epsilon-greedy, Beta Thompson sampling, LinUCB, linear Thompson.

Each follows :class:`~relevo.learning.policy.Policy`: seeded with ``numpy.random.default_rng``,
never-seen actions start from the prior, and every choice logs the probability with which each
action is put first, at least ``floor / K`` each (see :mod:`relevo.learning.exploration`).

Deterministic scores (LinUCB, the greedy part of epsilon-greedy) put ``1 - floor`` on the best
action. Thompson sampling's ``P(first)`` has no closed form, so it is estimated from ``draws``
vectorised draws of every arm's score; the served action is then drawn from that estimate mixed
with the floor, so the logged probability is exactly the one the action was chosen with.

LinUCB's ``alpha`` and linear Thompson's ``noise`` belong on the scale of the reward's standard
deviation, ``sqrt(p (1 - p))`` for a click rate ``p``: about 0.1 at 1 %, hence the defaults of
0.1 (a bonus of 1 would swamp every estimated mean). At click rates of 10-30 % the standard
deviation is 0.3-0.46 and exploration of 0.1 is too timid to undo an early unlucky estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import msgspec
import numpy as np

from relevo.learning.arms import ArmTable, ArmTableState, check_actions, check_reward
from relevo.learning.codec import (
    GeneratorState,
    decode,
    encode,
    generator_from_state,
    generator_state,
)
from relevo.learning.exploration import (
    argmax_share,
    check_draws,
    check_fraction,
    first_place_share,
    serve,
    with_floor,
)
from relevo.learning.linear import RidgeArms, check_context
from relevo.learning.policy import Choice, Policy, Vector

ALGORITHMS = ("epsilon_greedy", "thompson", "linucb", "lints")


class EpsilonGreedyState(msgspec.Struct, frozen=True, tag="epsilon_greedy"):
    epsilon: float
    floor: float
    rng: GeneratorState
    arms: ArmTableState


class EpsilonGreedy:
    """Non-contextual: each action's mean reward; the best with ``1 - epsilon``, else uniform.

    Ties for the best (as between never-seen actions, whose mean is 0) share the greedy mass.
    The uniform mass is ``floor + (1 - floor) * epsilon`` in all.
    """

    def __init__(self, *, seed: int = 0, epsilon: float = 0.05, floor: float = 0.1) -> None:
        check_fraction("epsilon", epsilon)
        check_fraction("floor", floor)
        self.epsilon = epsilon
        self.floor = floor
        self._rng = np.random.default_rng(seed)
        self._arms = ArmTable({"trials": np.zeros(()), "total": np.zeros(())})

    def choose(self, context: Vector, actions: Sequence[str]) -> Choice:
        check_actions(actions)
        rows = self._arms.rows(actions)
        trials = self._arms.array("trials")[rows]
        total = self._arms.array("total")[rows]
        means = np.divide(total, trials, out=np.zeros(len(rows)), where=trials > 0)
        greedy = (1.0 - self.epsilon) * argmax_share(means) + self.epsilon / len(rows)
        return serve(self._rng, actions, with_floor(greedy, self.floor), means)

    def learn_one(self, context: Vector, action: str, reward: float) -> None:
        check_reward(reward)
        row = self._arms.row(action)
        self._arms.array("trials")[row] += 1.0
        self._arms.array("total")[row] += reward

    def add_reward(self, context: Vector, action: str, reward: float) -> None:
        check_reward(reward)
        row = self._arms.find(action)
        if row is None or self._arms.array("trials")[row] == 0:
            raise ValueError(f"no trial of {action!r} to add a reward to")
        self._arms.array("total")[row] += reward

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def to_bytes(self) -> bytes:
        return encode(
            EpsilonGreedyState(
                epsilon=self.epsilon,
                floor=self.floor,
                rng=generator_state(self._rng),
                arms=self._arms.to_state(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        state = decode(data, EpsilonGreedyState)
        policy = cls(epsilon=state.epsilon, floor=state.floor)
        policy._rng = generator_from_state(state.rng)
        policy._arms.restore(state.arms)
        return policy


class BetaThompsonState(msgspec.Struct, frozen=True, tag="thompson"):
    floor: float
    draws: int
    prior: tuple[float, float]
    rng: GeneratorState
    arms: ArmTableState


class BetaThompson:
    """Non-contextual Beta-Bernoulli Thompson sampling; rewards are in [0, 1].

    Each action's click rate has a ``Beta(prior + successes, prior + failures)`` posterior; the
    scores are one posterior draw.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        floor: float = 0.1,
        draws: int = 64,
        prior: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        check_fraction("floor", floor)
        check_draws(draws)
        if not (prior[0] > 0 and prior[1] > 0):
            raise ValueError(f"prior must be positive, got {prior}")
        self.floor = floor
        self.draws = draws
        self.prior = prior
        self._rng = np.random.default_rng(seed)
        self._arms = ArmTable({"alpha": np.array(prior[0]), "beta": np.array(prior[1])})

    def choose(self, context: Vector, actions: Sequence[str]) -> Choice:
        check_actions(actions)
        rows = self._arms.rows(actions)
        alpha = self._arms.array("alpha")[rows]
        beta = self._arms.array("beta")[rows]
        samples = self._rng.beta(alpha, beta, size=(self.draws, len(rows)))
        probabilities = with_floor(first_place_share(samples), self.floor)
        return serve(self._rng, actions, probabilities, samples[0])

    def learn_one(self, context: Vector, action: str, reward: float) -> None:
        _check_unit_reward(reward)
        row = self._arms.row(action)
        self._arms.array("alpha")[row] += reward
        self._arms.array("beta")[row] += 1.0 - reward

    def add_reward(self, context: Vector, action: str, reward: float) -> None:
        """Turn ``reward`` of a counted failure into success: ``alpha += r, beta -= r``."""
        _check_unit_reward(reward)
        row = self._arms.find(action)
        beta = self._arms.array("beta")
        if row is None or beta[row] - reward < self.prior[1] - 1e-9:
            raise ValueError(f"no failed trial of {action!r} to add a reward to")
        self._arms.array("alpha")[row] += reward
        beta[row] -= reward

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def to_bytes(self) -> bytes:
        return encode(
            BetaThompsonState(
                floor=self.floor,
                draws=self.draws,
                prior=self.prior,
                rng=generator_state(self._rng),
                arms=self._arms.to_state(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        state = decode(data, BetaThompsonState)
        policy = cls(floor=state.floor, draws=state.draws, prior=state.prior)
        policy._rng = generator_from_state(state.rng)
        policy._arms.restore(state.arms)
        return policy


def _check_unit_reward(reward: float) -> None:
    if not 0.0 <= reward <= 1.0:
        raise ValueError(f"reward must be between 0 and 1, got {reward}")


class _LinearBandit:
    """What LinUCB and linear Thompson share: per-arm ridge statistics, the floor, the seed."""

    def __init__(self, dim: int, *, seed: int, floor: float, ridge: float) -> None:
        check_fraction("floor", floor)
        self.floor = floor
        self._arms = RidgeArms(dim, ridge)
        self._rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int:
        return self._arms.dim

    @property
    def ridge(self) -> float:
        return self._arms.ridge

    def learn_one(self, context: Vector, action: str, reward: float) -> None:
        self._arms.learn_one(context, action, reward)

    def add_reward(self, context: Vector, action: str, reward: float) -> None:
        self._arms.add_reward(context, action, reward)

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def _restore(self, rng: GeneratorState, arms: ArmTableState) -> None:
        self._rng = generator_from_state(rng)
        self._arms.restore(arms)


class LinUCBState(msgspec.Struct, frozen=True, tag="linucb"):
    dim: int
    ridge: float
    alpha: float
    floor: float
    rng: GeneratorState
    arms: ArmTableState


class LinUCB(_LinearBandit):
    """Disjoint LinUCB: score ``theta_a . x + alpha * sqrt(x^T A_a^-1 x)``, best first."""

    def __init__(
        self,
        dim: int,
        *,
        seed: int = 0,
        floor: float = 0.1,
        alpha: float = 0.1,
        ridge: float = 1.0,
    ) -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must not be negative, got {alpha}")
        super().__init__(dim, seed=seed, floor=floor, ridge=ridge)
        self.alpha = alpha

    def choose(self, context: Vector, actions: Sequence[str]) -> Choice:
        check_context(context, self.dim)
        check_actions(actions)
        rows = self._arms.rows(actions)
        bounds = self._arms.means(rows, context)
        bounds += self.alpha * np.sqrt(self._arms.widths(rows, context))
        return serve(self._rng, actions, with_floor(argmax_share(bounds), self.floor), bounds)

    def to_bytes(self) -> bytes:
        return encode(
            LinUCBState(
                dim=self.dim,
                ridge=self.ridge,
                alpha=self.alpha,
                floor=self.floor,
                rng=generator_state(self._rng),
                arms=self._arms.to_state(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        state = decode(data, LinUCBState)
        policy = cls(state.dim, floor=state.floor, alpha=state.alpha, ridge=state.ridge)
        policy._restore(state.rng, state.arms)
        return policy


class LinearThompsonState(msgspec.Struct, frozen=True, tag="lints"):
    dim: int
    ridge: float
    noise: float
    floor: float
    draws: int
    rng: GeneratorState
    arms: ArmTableState


class LinearThompson(_LinearBandit):
    """Linear Thompson sampling with independent per-arm Gaussian posteriors.

    With reward noise ``v`` the posterior of ``theta_a . x`` is
    ``N(theta_a . x, v^2 x^T A_a^-1 x)``; as the arms are independent, drawing each arm's score
    from it is exact, and far cheaper than drawing ``theta_a``. ``P(first)`` is estimated from
    ``draws`` such draws of every arm (rounded up to an even number: they come in antithetic
    pairs); the scores are one of them.
    """

    def __init__(
        self,
        dim: int,
        *,
        seed: int = 0,
        floor: float = 0.1,
        noise: float = 0.1,
        ridge: float = 1.0,
        draws: int = 64,
    ) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must not be negative, got {noise}")
        check_draws(draws)
        super().__init__(dim, seed=seed, floor=floor, ridge=ridge)
        self.noise = noise
        self.draws = draws

    def choose(self, context: Vector, actions: Sequence[str]) -> Choice:
        check_context(context, self.dim)
        check_actions(actions)
        rows = self._arms.rows(actions)
        # antithetic pairs: mean + e and mean - e are both exact draws; pairing them halves the
        # generator's cost (most of this call's) and lowers the variance of P(first)
        pairs = (self.draws + 1) // 2
        samples = np.empty((2 * pairs, len(rows)))
        noise = samples[:pairs]
        self._rng.standard_normal(out=noise)
        noise *= self.noise * np.sqrt(self._arms.widths(rows, context))
        np.negative(noise, out=samples[pairs:])
        samples += self._arms.means(rows, context)
        probabilities = with_floor(first_place_share(samples), self.floor)
        return serve(self._rng, actions, probabilities, samples[0])

    def to_bytes(self) -> bytes:
        return encode(
            LinearThompsonState(
                dim=self.dim,
                ridge=self.ridge,
                noise=self.noise,
                floor=self.floor,
                draws=self.draws,
                rng=generator_state(self._rng),
                arms=self._arms.to_state(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        state = decode(data, LinearThompsonState)
        policy = cls(
            state.dim, floor=state.floor, noise=state.noise, ridge=state.ridge, draws=state.draws
        )
        policy._restore(state.rng, state.arms)
        return policy


_POLICIES: dict[str, type[Policy]] = {
    "epsilon_greedy": EpsilonGreedy,
    "thompson": BetaThompson,
    "linucb": LinUCB,
    "lints": LinearThompson,
}


def build_policy(
    algorithm: str,
    *,
    dim: int,
    seed: int = 0,
    floor: float = 0.1,
    alpha: float = 0.1,
    epsilon: float = 0.05,
    noise: float = 0.1,
    ridge: float = 1.0,
) -> Policy:
    """A fresh policy named by ``algorithm`` (one of :data:`ALGORITHMS`).

    Each takes the settings it uses: ``dim`` (context length), ``alpha`` and ``ridge`` for the
    linear ones, ``epsilon`` for epsilon-greedy, ``noise`` for linear Thompson.
    """
    if algorithm == "epsilon_greedy":
        return EpsilonGreedy(seed=seed, epsilon=epsilon, floor=floor)
    if algorithm == "thompson":
        return BetaThompson(seed=seed, floor=floor)
    if algorithm == "linucb":
        return LinUCB(dim, seed=seed, floor=floor, alpha=alpha, ridge=ridge)
    if algorithm == "lints":
        return LinearThompson(dim, seed=seed, floor=floor, noise=noise, ridge=ridge)
    raise ValueError(_unknown(algorithm))


def load_policy(algorithm: str, data: bytes) -> Policy:
    """The policy that ``to_bytes`` saved as ``data``; its kind must be ``algorithm``."""
    kind = _POLICIES.get(algorithm)
    if kind is None:
        raise ValueError(_unknown(algorithm))
    return kind.from_bytes(data)


def _unknown(algorithm: str) -> str:
    return f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
