"""The ``Strategy`` protocol every outer optimizer implements, and the fitness shaping they share.

A strategy is evosax's ``init / ask / tell`` over an explicit, immutable state: it maximizes
the fitness of a flat parameter vector and knows nothing of RL. The outer loop
(``epgkit.method.evolve``) calls only what is declared here: V, which candidates share their
tasks, the candidates of an epoch, the update from their fitness, the mean φ, the metrics to
log and the state as plain arrays and numbers for the checkpoint. Every random draw comes from
the ``rng`` the outer loop passes (one per epoch), never from a global generator, so the same
seed gives the same φ on any number of workers and across ``--resume``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

S = TypeVar("S")

#: What a strategy's state becomes in a checkpoint: arrays, integers, floats and strings only, so
#: that it loads with ``torch.load(weights_only=True)``.
Saved = Mapping[str, np.ndarray | int | float | str]


@runtime_checkable
class Strategy(Protocol[S]):
    """An outer optimizer: proposes V candidates per epoch and moves on their fitness.

    Attributes:
        population: V, the number of candidates per epoch.
    """

    population: int

    def init(self, phi: np.ndarray) -> S:
        """The state at the start, centred on ``phi`` (P,)."""

    def ask(self, state: S, rng: np.random.Generator) -> np.ndarray:
        """This epoch's random draws, (V, P): the strategy's own description of its candidates
        (e.g. standard-normal directions), drawn from ``rng`` alone."""

    def candidates(self, state: S, draws: np.ndarray) -> np.ndarray:
        """The parameters to evaluate, (V, P), for the ``draws`` of ``ask``."""

    def tell(self, state: S, draws: np.ndarray, fitness: np.ndarray) -> S:
        """The next state from the fitness (V,) of the candidates; −inf marks a failed one.

        Pure: returns a new state and leaves ``state`` as it was.
        """

    def mean(self, state: S) -> np.ndarray:
        """The current loss: the centre of the search distribution, (P,)."""

    def shared_tasks(self) -> tuple[int, ...]:
        """For each candidate, the candidate whose tasks and seeds it reuses (itself when it has
        its own): the two halves of an antithetic pair are evaluated on the same tasks, so their
        fitness differs by the loss alone."""

    def metrics(self, state: S) -> dict[str, float]:
        """Numbers worth logging for the epoch about to be told from ``state`` (step sizes)."""

    def save(self, state: S) -> Saved:
        """The state as arrays and numbers, under keys of the strategy's choosing."""

    def load(self, saved: Mapping[str, Any]) -> S:
        """The state ``save`` wrote (the mapping may hold other keys too); a missing or
        mistyped entry raises ``ValueError`` naming it."""


def normal_draws(
    rng: np.random.Generator, population: int, size: int, antithetic: bool
) -> np.ndarray:
    """V standard-normal vectors (V, size); antithetic: V/2 of them, then their negatives."""
    if antithetic:
        half = rng.standard_normal((population // 2, size))
        return np.concatenate([half, -half])
    return rng.standard_normal((population, size))


def own_tasks(population: int) -> tuple[int, ...]:
    """``shared_tasks`` of a strategy whose candidates each get their own tasks."""
    return tuple(range(population))


def mirrored_tasks(population: int) -> tuple[int, ...]:
    """``shared_tasks`` of antithetic sampling: candidate i + V/2 is the mirror of candidate i."""
    half = population // 2
    return tuple(range(half)) + tuple(range(half))


def require(saved: Mapping[str, Any], name: str, spec: Mapping[str, type]) -> dict[str, Any]:
    """The entries ``spec`` names, checked for type; arrays come back as float64 copies.

    Raises:
        ValueError: one line naming the missing or mistyped entry and the strategy.
    """
    out: dict[str, Any] = {}
    for key, kind in spec.items():
        value = saved.get(key)
        if kind is np.ndarray and hasattr(value, "numpy"):
            value = value.numpy()  # a tensor from a checkpoint
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"a {name} state needs {key!r} of type {kind.__name__}")
        out[key] = np.array(value, np.float64) if kind is np.ndarray else value
    return out


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Ranks mapped linearly onto [−0.5, 0.5]; equal fitness gets equal (mean) ranks, −inf
    ranks last.

    Equal ranks matter: the two halves of an antithetic pair share their task and seeds, so
    when the loss does not affect fitness (guidance α = 1) they tie exactly, and ranks broken
    by order would push φ along −v for no reason.
    """
    fitness = np.asarray(fitness, np.float64)
    n = len(fitness)
    order = np.argsort(fitness, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    sorted_fitness = fitness[order]
    starts = np.flatnonzero(np.r_[True, sorted_fitness[1:] != sorted_fitness[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], n], strict=True):
        ranks[order[start:stop]] = (start + stop - 1) / 2
    return ranks / max(n - 1, 1) - 0.5


def shaped(fitness: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Fitness shaping by rank: the worst candidate gets ``table[0]``, the best ``table[-1]``;
    tied candidates share the mean of their positions' values, −inf ranks last.

    Depends on the order of the fitness alone, so any increasing transform of it gives the
    same result.
    """
    fitness = np.asarray(fitness, np.float64)
    n = len(fitness)
    order = np.argsort(fitness, kind="stable")
    sorted_fitness = fitness[order]
    out = np.empty(n)
    starts = np.flatnonzero(np.r_[True, sorted_fitness[1:] != sorted_fitness[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], n], strict=True):
        out[order[start:stop]] = np.mean(table[start:stop])
    return out


def uninformative(weights: np.ndarray, antithetic: bool) -> bool:
    """True when no candidate did better than another, or no direction better than its mirror
    (as when guidance α = 1 makes the fitness ignore φ): the epoch holds no information, and a
    strategy takes no step on it."""
    half = len(weights) // 2
    return bool(
        (weights == weights[0]).all() or (antithetic and (weights[:half] == weights[half:]).all())
    )
