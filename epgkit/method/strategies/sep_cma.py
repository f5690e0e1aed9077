"""Separable CMA-ES (Ros and Hansen 2008, "A simple modification in CMA-ES achieving linear time
and space complexity") through Hansen's ``cma`` package (option ``CMA_diagonal``).

The covariance is diagonal: φ has 10k–30k parameters, and a full matrix would be P² numbers.
σ follows cumulative step-size adaptation (CSA), the rule of the sep-CMA paper; ``cma``'s own
default in high dimension (two-point adaptation) needs the first two candidates of each epoch to
be its own mirrored samples, which the outer loop's ask does not draw.

The state lives here, not in a ``cma`` object: each ``tell`` builds a ``CMAEvolutionStrategy``
from ``CMAState``, tells it, and reads the new state back. What the state holds is everything
``cma``'s update reads in diagonal mode: the mean, σ, the diagonal scales, the evolution paths
p_c and p_σ and the iteration count. What it leaves out are ``cma``'s records for termination
and analysis (best solution, fitness history), which the outer loop does not use; a resumed
run is therefore identical to an uninterrupted one (tests/test_strategies.py checks this, and
that the rebuilt object follows a long-lived ``cma`` object step for step).
Candidates are drawn from the outer loop's ``rng``; ``cma``'s own generator is never used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from epgkit.method import checks
from epgkit.method.strategies.base import Saved, centered_ranks, own_tasks, require
from epgkit.registry import register


@dataclass(frozen=True)
class CMAState:
    """sep-CMA-ES's state: mean m, step size σ, diagonal scales d (the search distribution is
    N(m, σ² diag(d)²)), evolution paths p_c and p_σ, and the iteration count."""

    mean: np.ndarray
    sigma: float
    scales: np.ndarray
    pc: np.ndarray
    ps: np.ndarray
    step: int = 0


@dataclass(frozen=True)
class _Replay:
    """``cma``'s ``randn`` option: hands ``cma`` the draws the outer loop's rng made."""

    draws: np.ndarray

    def __call__(self, *shape: int) -> np.ndarray:
        if shape != self.draws.shape:
            raise RuntimeError(f"SepCMAES: cma asked for draws of shape {shape}")
        return self.draws


@register("strategy")
@dataclass(frozen=True)
class SepCMAES:
    """Separable (diagonal) CMA-ES with cumulative step-size adaptation, via ``cma``.

    Every other setting is ``cma``'s default for this dimension and population (learning rates
    c_σ, c_c, c_1, c_μ, weights, damping: Hansen's "The CMA Evolution Strategy: A Tutorial").

    Attributes:
        population: V (λ), candidates per epoch (CMA's default, 4 + ⌊3 ln P⌋, is about 33 for
            P = 20,000; EPG's V = 64 is the default here too).
        sigma: σ₀, the initial step size, in φ's units (like ``OpenES.sigma``).
    """

    population: int = 64
    sigma: float = 0.01

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        if self.sigma <= 0:
            raise ValueError(f"SepCMAES.sigma must be > 0, got {self.sigma}")
        if self.population < 4:
            raise ValueError(f"SepCMAES.population must be ≥ 4, got {self.population}")

    def _options(self, draws: np.ndarray) -> dict[str, Any]:
        # cma is imported where it is used: its import takes seconds, which every epgkit command
        # and every Dask worker would pay otherwise.
        from cma.sigma_adaptation import CMAAdaptSigmaCSA

        return {
            "CMA_diagonal": True,
            "AdaptSigma": CMAAdaptSigmaCSA,
            "popsize": self.population,
            "randn": _Replay(draws),
            "seed": math.nan,  # with a seed, cma would seed NumPy's global generator
            "verbose": -9,
            "verb_log": 0,
            "tolx": 0,
            "tolfun": 0,
        }

    def _build(self, state: CMAState, draws: np.ndarray) -> Any:
        """A ``cma`` object in ``state`` whose next ask samples ``draws``."""
        import cma

        es = cma.CMAEvolutionStrategy(state.mean, state.sigma, self._options(draws))
        es.sigma_vec.scaling = state.scales.copy()
        es.sigma_vec.is_identity = False
        es.pc = state.pc.copy()
        es.adapt_sigma.initialize(es)
        es.adapt_sigma.ps = state.ps.copy()
        es.countiter, es.countevals = state.step, state.step * self.population
        # What its first ask and tell would have made (neither is read by the update).
        es.timer, es.mean_old = cma.utilities.utils.ElapsedWCTime(), state.mean
        return es

    def init(self, phi: np.ndarray) -> CMAState:
        """m = φ, σ = ``sigma``, unit scales, zero paths."""
        phi = np.asarray(phi, np.float64)
        zeros = np.zeros_like(phi)
        return CMAState(phi.copy(), float(self.sigma), np.ones_like(phi), zeros, zeros.copy(), 0)

    def ask(self, state: CMAState, rng: np.random.Generator) -> np.ndarray:
        """V standard-normal z (V, P); the candidates are m + σ d ⊙ z."""
        return rng.standard_normal((self.population, state.mean.size))

    def candidates(self, state: CMAState, draws: np.ndarray) -> np.ndarray:
        """m + σ d ⊙ z, (V, P)."""
        return state.mean + state.sigma * (state.scales * draws)  # in cma's order of operations

    def tell(self, state: CMAState, draws: np.ndarray, fitness: np.ndarray) -> CMAState:
        """One sep-CMA-ES update; −inf ranks last."""
        fitness = np.asarray(fitness, np.float64)
        ranks = centered_ranks(fitness)
        if not np.isfinite(fitness).any() or (ranks == ranks[0]).all():
            return state  # nothing did better than anything else: no information
        es = self._build(state, draws)
        # CMA minimizes and uses the fitness's order only: ranks give it exactly that, with
        # failures (−inf) last and nothing non-finite.
        es.tell(es.ask(), list(-ranks))
        return CMAState(
            np.array(es.mean, np.float64),
            float(es.sigma),
            np.array(es.sigma_vec.scaling, np.float64),
            np.array(es.pc, np.float64),
            np.array(es.adapt_sigma.ps, np.float64),
            int(es.countiter),
        )

    def mean(self, state: CMAState) -> np.ndarray:
        """m, the current loss."""
        return state.mean

    def shared_tasks(self) -> tuple[int, ...]:
        """Every candidate has its own tasks."""
        return own_tasks(self.population)

    def metrics(self, state: CMAState) -> dict[str, float]:
        """σ and the extremes of the per-parameter standard deviations σ d."""
        std = state.sigma * state.scales
        return {"sigma": state.sigma, "std_min": float(std.min()), "std_max": float(std.max())}

    def save(self, state: CMAState) -> Saved:
        """m under ``phi`` (the key every checkpoint's loss has), σ, d, p_c, p_σ, the step."""
        return {"phi": state.mean, "cma_sigma": state.sigma, "cma_scales": state.scales,
                "cma_pc": state.pc, "cma_ps": state.ps, "step": state.step}  # fmt: skip

    def load(self, saved: Mapping[str, Any]) -> CMAState:
        """The state ``save`` wrote."""
        arrays = ("phi", "cma_scales", "cma_pc", "cma_ps")
        spec = {**dict.fromkeys(arrays, np.ndarray), "cma_sigma": float, "step": int}
        got = require(saved, "SepCMAES", spec)
        if any(got[k].shape != got["phi"].shape for k in arrays):
            raise ValueError("a SepCMAES state needs 'cma_scales', 'cma_pc' and 'cma_ps' of "
                             "the shape of 'phi'")  # fmt: skip
        return CMAState(got["phi"], got["cma_sigma"], got["cma_scales"], got["cma_pc"],
                        got["cma_ps"], got["step"])  # fmt: skip
