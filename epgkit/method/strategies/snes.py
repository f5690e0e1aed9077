"""SNES, separable natural evolution strategies (Schaul, Glasmachers and Schmidhuber, 2011,
"High dimensions and heavy tails for natural evolution strategies", Algorithm 2; after Wierstra
et al. 2014, "Natural evolution strategies").

The search distribution is N(μ, diag(σ²)) with one σ per parameter. Each epoch draws z_k ~
N(0, I), evaluates x_k = μ + σ ⊙ z_k, replaces fitness by rank-based utilities u_k
(``utilities``), and follows the natural gradient:
μ ← μ + η_μ · σ ⊙ Σ_k u_k z_k and σ ← σ ⊙ exp(η_σ / 2 · Σ_k u_k (z_k² − 1)).
Linear in P per candidate, which is what φ's 10k–30k parameters need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from epgkit.method import checks
from epgkit.method.strategies.base import (
    Saved,
    mirrored_tasks,
    normal_draws,
    own_tasks,
    require,
    shaped,
    uninformative,
)
from epgkit.registry import register


@dataclass(frozen=True)
class SNESState:
    """The search distribution: mean μ (the current loss) and per-parameter scales σ."""

    mu: np.ndarray
    sigma: np.ndarray
    step: int = 0


def utilities(population: int) -> np.ndarray:
    """Fitness shaping of NES (Wierstra et al. 2014, Eq. 22): the k-th best of λ gets
    max(0, ln(λ/2 + 1) − ln k), normalized to sum 1, minus 1/λ; worst first."""
    k = np.arange(1, population + 1)
    raw = np.maximum(0.0, math.log(population / 2 + 1) - np.log(k))
    return (raw / raw.sum() - 1 / population)[::-1]


@register("strategy")
@dataclass(frozen=True)
class SNES:
    """Separable natural ES: a mean and one step size per parameter (Schaul et al. 2011).

    Attributes:
        population: V (λ), candidates per epoch (the paper's NES default, 4 + ⌊3 ln P⌋, is
            about 33 for P = 20,000; EPG's V = 64 is the default here too).
        sigma: Initial σ of every parameter, in φ's units (like ``OpenES.sigma``).
        lr_mean: η_μ, the mean's step size in units of σ (NES default: 1).
        lr_sigma: η_σ, the step size of log σ; None takes NES's default (3 + ln P) / (5 √P),
            about 0.003 for P = 20,000.
        antithetic: Mirrored sampling: candidates come in ±z pairs that share tasks and seeds
            (not in the NES papers; lowers the variance of the mean's update as for OpenES).
    """

    population: int = 64
    sigma: float = 0.01
    lr_mean: float = 1.0
    lr_sigma: float | None = None
    antithetic: bool = False

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        if self.sigma <= 0:
            raise ValueError(f"SNES.sigma must be > 0, got {self.sigma}")
        if self.lr_mean <= 0 or (self.lr_sigma is not None and self.lr_sigma <= 0):
            raise ValueError(
                f"SNES.lr_mean and lr_sigma must be > 0, got {self.lr_mean}, {self.lr_sigma}"
            )
        if self.population < 2 or (self.antithetic and self.population % 2):
            raise ValueError(
                f"SNES.population must be ≥ 2 (and even with antithetic), got {self.population}"
            )

    def init(self, phi: np.ndarray) -> SNESState:
        """μ = φ and σ = ``sigma`` everywhere."""
        phi = np.asarray(phi, np.float64)
        return SNESState(phi.copy(), np.full_like(phi, self.sigma), 0)

    def ask(self, state: SNESState, rng: np.random.Generator) -> np.ndarray:
        """V standard-normal z (V, P); the candidates are μ + σ ⊙ z."""
        return normal_draws(rng, self.population, state.mu.size, self.antithetic)

    def candidates(self, state: SNESState, draws: np.ndarray) -> np.ndarray:
        """μ + σ ⊙ z, (V, P)."""
        return state.mu + state.sigma * draws

    def tell(self, state: SNESState, draws: np.ndarray, fitness: np.ndarray) -> SNESState:
        """One natural-gradient step on μ and log σ."""
        fitness = np.asarray(fitness, np.float64)
        if not np.isfinite(fitness).any():
            return state  # every candidate failed: nothing to learn from
        u = shaped(fitness, utilities(len(fitness)))
        if uninformative(u, self.antithetic):
            return state  # as OpenES: without information σ would drift on noise alone
        p = state.mu.size
        lr_sigma = self.lr_sigma or (3 + math.log(p)) / (5 * math.sqrt(p))  # None: NES's
        grad_mu = u @ draws
        grad_sigma = u @ (draws**2 - 1)
        mu = state.mu + self.lr_mean * state.sigma * grad_mu
        sigma = state.sigma * np.exp(lr_sigma / 2 * grad_sigma)
        return SNESState(mu, sigma, state.step + 1)

    def mean(self, state: SNESState) -> np.ndarray:
        """μ, the current loss."""
        return state.mu

    def shared_tasks(self) -> tuple[int, ...]:
        """The halves of a ±z pair share tasks and seeds."""
        return mirrored_tasks(self.population) if self.antithetic else own_tasks(self.population)

    def metrics(self, state: SNESState) -> dict[str, float]:
        """σ's geometric mean and its extremes across parameters."""
        return {
            "sigma": float(np.exp(np.log(state.sigma).mean())),
            "sigma_min": float(state.sigma.min()),
            "sigma_max": float(state.sigma.max()),
        }

    def save(self, state: SNESState) -> Saved:
        """μ under ``phi`` (the key every checkpoint's loss has), σ and the step count."""
        return {"phi": state.mu, "sigma": state.sigma, "step": state.step}

    def load(self, saved: Mapping[str, Any]) -> SNESState:
        """The state ``save`` wrote."""
        got = require(saved, "SNES", {"phi": np.ndarray, "sigma": np.ndarray, "step": int})
        if got["sigma"].shape != got["phi"].shape:
            raise ValueError("a SNES state needs 'sigma' of the shape of 'phi'")
        return SNESState(got["phi"], got["sigma"], got["step"])
