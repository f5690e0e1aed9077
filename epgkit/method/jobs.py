"""What an inner loop is asked to run (``Job``) and what it reports (``Result``): plain data,
sent to and from Dask workers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Job:
    """One inner loop to run: which loss parameters, how much guidance, which task and seed.

    Attributes:
        theta0: The flat θ to start from instead of the random one drawn from ``seed`` (a past
            policy, ``epgkit.method.past_init``), laid out as ``mlp.flat_params``; None for
            the usual start.
        keep_theta: Report the final θ in ``Result.theta`` (off unless asked: it is the size
            of the policy).
    """

    phi: np.ndarray
    alpha: float
    task_seed: int
    seed: int
    index: int = 0
    candidate: int = 0
    theta0: np.ndarray | None = None
    keep_theta: bool = False


@dataclass
class Result:
    """What an inner loop reports; ``seed`` and ``task_seed`` re-run it alone.

    Attributes:
        fitness: Mean return of the evaluation episodes (−inf when the inner loop failed).
        failed: Why the inner loop was stopped (non-finite loss, parameters or physics).
        episodes: (env step at which it ended, return) of every training episode.
        kl: KL(π_before || π_after) over the update's M states, one per update.
        policy: With ``run(..., keep_policy=True)``: the trained θ and the observation
            normalizer's ``obs_mean`` and ``obs_std``, enough to act with the final policy.
        theta: With ``Job.keep_theta``: the final θ, flat float32 (``mlp.flat_params``).
    """

    index: int
    candidate: int
    task_seed: int
    seed: int
    fitness: float
    eval_returns: list[float]
    env_steps: int
    task: dict[str, Any]
    failed: str | None = None
    episodes: list[tuple[int, float]] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    policy: dict[str, np.ndarray] | None = None
    theta: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        job: Job,
        returns: list[float],
        env_steps: int,
        task: dict[str, Any],
        failed: str | None,
        episodes: list[tuple[int, float]],
        kl: list[float],
    ) -> Result:
        """The result of ``job``: its fitness is the mean evaluation return, −inf if it failed
        (a non-finite mean fails it too)."""
        fitness = float(np.mean(returns)) if returns and not failed else -math.inf
        if not math.isfinite(fitness) and not failed:
            failed = "non-finite evaluation return"
        return cls(job.index, job.candidate, job.task_seed, job.seed, fitness, returns, env_steps,
                   task, failed, episodes, kl)  # fmt: skip

    def curve(self) -> float:
        """The area under the learning curve per env step: the mean return of the training
        episodes, each weighted by its length (an episode of 1,000 steps counts as much as
        twenty of 50). The final evaluation return when no training episode ended; −inf when
        the inner loop failed."""
        if self.failed is not None or not self.episodes:
            return self.fitness
        ends, returns = np.array(self.episodes, dtype=np.float64).T
        lengths = np.diff(ends, prepend=0.0)
        return float(lengths @ returns / lengths.sum())
