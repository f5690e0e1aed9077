"""OpenES, the paper's outer optimizer (Salimans et al. 2017, as EPG uses it).

Section 3.2 / Eq. (7): V Gaussian perturbations φ + σv, centred ranks of their fitness,
the gradient estimate Σ_v rank_v · v / (Vσ) minus an L2 term, applied with Adam (β1 = 0,
β2 = 0.999) at a step size annealed linearly from ``lr_start`` to ``lr_end``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from epgkit.method import checks
from epgkit.method.strategies.base import (
    Saved,
    centered_ranks,
    mirrored_tasks,
    normal_draws,
    own_tasks,
    require,
    uninformative,
)
from epgkit.registry import register


@dataclass(frozen=True)
class ESState:
    """Everything the ES needs to continue: the mean φ, Adam's moments and step count."""

    phi: np.ndarray
    m: np.ndarray
    v: np.ndarray
    step: int = 0


@register("strategy")
@dataclass(frozen=True)
class OpenES:
    """OpenAI-style ES with Adam, as used by EPG (the paper's outer loop, Eq. 7).

    Its checkpoint keys are ``phi``, ``m``, ``v`` and ``step``, as in every run so far.

    Attributes:
        population: V, the number of perturbations per epoch (pairs count twice).
        sigma: σ, the perturbation scale in φ's units (reference code: 0.01).
        antithetic: Use ±v pairs (not in the paper; lowers the gradient's variance).
        lr_start: Outer step size δ_out at the first step.
        lr_end: Outer step size after ``lr_decay_steps`` steps.
        lr_decay_steps: Steps of the linear step-size annealing (paper: 2000 epochs).
        beta1: Adam's first-moment decay (paper: 0, i.e. no momentum).
        beta2: Adam's second-moment decay.
        l2: Coefficient of the L2 regularization of φ.
        rank_transform: Use centred ranks (paper) instead of standardized fitness.
    """

    population: int = 64
    sigma: float = 0.01
    antithetic: bool = False
    lr_start: float = 1e-2
    lr_end: float = 1e-3
    lr_decay_steps: int = 2000
    beta1: float = 0.0
    beta2: float = 0.999
    l2: float = 0.001
    rank_transform: bool = True

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        if self.lr_decay_steps < 0:
            raise ValueError(f"OpenES.lr_decay_steps must be ≥ 0, got {self.lr_decay_steps}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(
                f"OpenES.beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}"
            )
        if self.lr_start <= 0 or self.lr_end < 0:
            raise ValueError(
                f"OpenES.lr_start must be > 0 and lr_end ≥ 0, got {self.lr_start}, {self.lr_end}"
            )
        if self.sigma <= 0:
            raise ValueError(f"OpenES.sigma must be > 0, got {self.sigma}")
        if self.population < 2 or (self.antithetic and self.population % 2):
            raise ValueError(
                f"OpenES.population must be ≥ 2 (and even with antithetic), got {self.population}"
            )

    def init(self, phi: np.ndarray) -> ESState:
        """The state at the start, around ``phi``."""
        phi = np.asarray(phi, np.float64)
        return ESState(phi.copy(), np.zeros_like(phi), np.zeros_like(phi), 0)

    def lr(self, step: int) -> float:
        """The annealed step size at ``step``."""
        frac = min(step / max(self.lr_decay_steps, 1), 1.0)
        return self.lr_start + frac * (self.lr_end - self.lr_start)

    def ask(self, state: ESState, rng: np.random.Generator) -> np.ndarray:
        """V standard-normal directions v, shape (V, P); the candidates are φ + σv."""
        return normal_draws(rng, self.population, state.phi.size, self.antithetic)

    def candidates(self, state: ESState, noise: np.ndarray) -> np.ndarray:
        """The perturbed parameters φ + σv, (V, P)."""
        return state.phi + self.sigma * noise

    def tell(self, state: ESState, noise: np.ndarray, fitness: np.ndarray) -> ESState:
        """One ascent step from the fitness (V,) of the candidates ``noise`` described."""
        fitness = np.asarray(fitness, np.float64)
        if not np.isfinite(fitness).any():
            return state  # every candidate failed: nothing to learn from
        if self.rank_transform:
            weights = centered_ranks(fitness)
        else:
            finite = np.where(np.isfinite(fitness), fitness, np.nan)
            filled = np.where(np.isfinite(fitness), fitness, np.nanmin(finite))
            weights = (filled - filled.mean()) / (filled.std() + 1e-8)
        if uninformative(weights, self.antithetic):
            # No direction did better than its opposite (all tied, or every ±v pair tied, as
            # when guidance α = 1 makes fitness ignore φ): no information. Adam would turn the
            # L2 term alone into a full step of size lr, so no step is taken, nor counted.
            return state
        step = state.step + 1
        grad = weights @ noise / (len(fitness) * self.sigma) - self.l2 * state.phi
        m = self.beta1 * state.m + (1 - self.beta1) * grad
        v = self.beta2 * state.v + (1 - self.beta2) * grad**2
        m_hat = m / (1 - self.beta1**step)
        v_hat = v / (1 - self.beta2**step)
        phi = state.phi + self.lr(state.step) * m_hat / (np.sqrt(v_hat) + 1e-8)
        return replace(state, phi=phi, m=m, v=v, step=step)

    def mean(self, state: ESState) -> np.ndarray:
        """φ, the current loss."""
        return state.phi

    def shared_tasks(self) -> tuple[int, ...]:
        """The halves of a ±v pair share tasks and seeds."""
        return mirrored_tasks(self.population) if self.antithetic else own_tasks(self.population)

    def metrics(self, state: ESState) -> dict[str, float]:
        """The step size the next ``tell`` uses, and σ."""
        return {"lr": self.lr(state.step), "sigma": self.sigma}

    def save(self, state: ESState) -> Saved:
        """φ, Adam's moments and the step count."""
        return {"phi": state.phi, "m": state.m, "v": state.v, "step": state.step}

    def load(self, saved: Mapping[str, Any]) -> ESState:
        """The state ``save`` wrote (and every epgkit checkpoint before strategies had a
        protocol: the keys are the same)."""
        got = require(saved, "OpenES", {"phi": np.ndarray, "m": np.ndarray, "v": np.ndarray,
                                        "step": int})  # fmt: skip
        return ESState(got["phi"], got["m"], got["v"], got["step"])
