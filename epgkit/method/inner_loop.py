"""The inner loop (Algorithm 2; the body of Algorithm 1): train a fresh policy with a loss.

Per inner loop: start from a random θ and a buffer of N zero tuples; for t = 1..U act, step,
append (s, a, r, d); every M steps compute the loss of each of the last M steps (each over the
N-row window ending at it), shuffle them into minibatches and take one Adam step per minibatch
on θ and the loss's own trained state (the memory unit). The blend of Eq. (10),
(1 − α)·L_φ + α·L_pg, is applied per inner loop. Fitness is the mean return of a few
evaluation episodes of the final policy.

``InnerLoop.run`` runs K of them in lockstep (``epgkit.method.lockstep``); each draws from its own
seeds only, so its result does not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import epgkit.envs  # noqa: F401  (registers the task families on Dask workers too)
from epgkit.envs.ids import takes_task_seed
from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method.dims import Dims
from epgkit.method.lockstep import Lockstep
from epgkit.method.losses import EPGLoss, LossContext, PPOLoss
from epgkit.method.policies import default_policy, fitting, flat_params
from epgkit.method.user_code import UserCodeError, blame
from epgkit.registry import register


@dataclass(frozen=True)
class Job:
    """One inner loop to run: which loss parameters, how much guidance, which task and seed."""

    phi: np.ndarray
    alpha: float
    task_seed: int
    seed: int
    index: int = 0
    candidate: int = 0


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


@register("inner_loop")
@dataclass(frozen=True)
class InnerLoop:
    """Algorithm 2 and its hyperparameters: a plain, picklable object gin builds once.

    Attributes:
        env_id: Gymnasium id of the task family; every experiment names it (there is no
            default, so that a config which names no env is refused instead of running one).
        loss: The loss trained with (L_φ), e.g. ``@EPGLoss()``, or ``@PPOLoss()`` as a baseline.
        guide: L_pg blended in with weight α (Eq. 10), or None.
        policy: The policy, or None for the default of the env's action space: GaussianMLP
            for Box actions, CategoricalMLP for Discrete ones (``epgkit.run.config.with_policies``
            builds it through gin in the driver, so that ``GaussianMLP.hidden`` applies).
        steps: U, environment steps of training.
        update_every: M, steps between updates.
        buffer_size: N, rows of history the loss sees.
        minibatch: Steps per Adam step (each of the last M steps is used exactly once).
        lr: Adam step size δ_in of the inner loop.
        eval_episodes: Evaluation episodes of the final policy that make the fitness.
        eval_deterministic: Evaluate with the mean action instead of sampling.
        eval_max_steps: Cap on an evaluation episode for envs without a time limit.
        passes: Shuffled passes over the last M steps per update: 1 in EPG's inner loop
            (each step used once); PPO baselines may use more (PPO's "epochs").
        reduce: How per-step losses make a minibatch loss: "sum" (paper) or "mean".
        env_kwargs: Extra constructor arguments of the env, as (name, value) pairs.
        evolve_init: EPG+I (Figure 13): the ES evolves the policy's initial parameters θ₀
            with φ; the evolved vector is φ followed by θ₀, and every inner loop starts from
            θ₀ instead of a random θ. With a hand-designed loss (φ empty) it is PPO+I.
    """

    env_id: str
    loss: Any = EPGLoss()
    guide: Any = PPOLoss()
    policy: Any = None
    steps: int = 8192
    update_every: int = 64
    buffer_size: int = 512
    minibatch: int = 32
    lr: float = 1e-3
    eval_episodes: int = 3
    eval_deterministic: bool = False
    eval_max_steps: int = 1000
    passes: int = 1
    reduce: str = "sum"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    evolve_init: bool = False

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        m, n, b = self.update_every, self.buffer_size, self.minibatch
        if m < 1 or n < 1:
            raise ValueError(f"InnerLoop: update_every (M) and buffer_size (N) must be ≥ 1, "
                             f"got M={m}, N={n}")  # fmt: skip
        problems = [
            f"steps (U) must be a positive multiple of update_every (M): U={self.steps}, M={m}"
            if self.steps <= 0 or self.steps % m
            else "",
            f"update_every (M) must be ≤ buffer_size (N): M={m}, N={n}" if m > n else "",
            f"minibatch must divide update_every (M): minibatch={b}, M={m}"
            if b <= 0 or m % b
            else "",
            f"reduce must be 'sum' or 'mean', got {self.reduce!r}"
            if self.reduce not in ("sum", "mean")
            else "",
            f"lr must be positive, got {self.lr}" if self.lr <= 0 else "",
            f"passes must be ≥ 1, got {self.passes}" if self.passes < 1 else "",
            f"eval_episodes must be ≥ 1, got {self.eval_episodes}"
            if self.eval_episodes < 1
            else "",
            f"eval_max_steps must be ≥ 1, got {self.eval_max_steps}"
            if self.eval_max_steps < 1
            else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("InnerLoop: " + "; ".join(problems))

    def make_env(self, task_seed: int) -> gym.Env:
        """The env of one task; envs that are not task families ignore the task seed."""
        kwargs = dict(self.env_kwargs)
        if takes_task_seed(self.env_id):
            kwargs["task_seed"] = task_seed
        with blame(f"env {self.env_id!r}", "its constructor"):
            return gym.make(self.env_id, disable_env_checker=True, **kwargs)

    def dims(self) -> Dims:
        """The dims of this inner loop's env family."""
        env = self.make_env(0)
        try:
            return Dims.of(env)
        finally:
            env.close()

    def policy_for(self, dims: Dims) -> Any:
        """The policy trained on an env of ``dims``: ``policy``, or when None the default of the
        action space with its default sizes.

        Raises:
            ConfigError: The policy declares another action space than the env's.
        """
        policy = self.policy if self.policy is not None else default_policy(dims)()
        if getattr(policy, "discrete", dims.discrete) != dims.discrete:
            kind = "Discrete" if dims.discrete else "Box"
            raise ConfigError(
                f"InnerLoop.policy = @{type(policy).__name__}() cannot act in {self.env_id}, whose "
                f"action space is {dims.action_space}; policies for {kind} actions: "
                f"{', '.join(fitting(dims))} (or None, to choose by the action space)"
            )
        return policy

    def context(self, dims: Dims | None = None) -> LossContext:
        """The shapes the loss is built for."""
        dims = dims or self.dims()
        dist_dim = self.policy_for(dims).dist_dim(dims)
        return LossContext(dims, dist_dim, self.buffer_size, self.update_every)

    def phi_size(self) -> int:
        """Dimension of the evolved vector: the loss's φ, then θ₀ under ``evolve_init``."""
        ctx = self.context()
        return self.loss.phi_size(ctx) + (self._theta0(ctx).size if self.evolve_init else 0)

    def init_phi(self, rng: np.random.Generator) -> np.ndarray:
        """An initial evolved vector: the loss's φ, then a fresh policy's θ under
        ``evolve_init``."""
        ctx = self.context()
        phi = self.loss.init_phi(ctx, rng)
        return np.concatenate([phi, self._theta0(ctx, rng)]) if self.evolve_init else phi

    def _theta0(self, ctx: LossContext, rng: np.random.Generator | None = None) -> np.ndarray:
        policy = self.policy_for(ctx.dims)
        theta = policy.init(ctx.dims, [rng or np.random.default_rng(0)])
        return flat_params(theta)[0].numpy().astype(np.float32)

    def run(self, jobs: Sequence[Job], keep_policy: bool = False) -> list[Result]:
        """Runs len(jobs) inner loops in lockstep and returns their results in order.

        Args:
            jobs: The inner loops to run.
            keep_policy: Return each trained policy in ``Result.policy`` (for rendering).
        """
        results = (lockstep := Lockstep(self, jobs)).run()
        if keep_policy:
            for i, result in enumerate(results):
                result.policy = {name: t[i].detach().numpy().copy()
                                 for name, t in lockstep.theta.items()}  # fmt: skip
                result.policy["obs_mean"] = lockstep.obs_norm.mean[i].copy()
                result.policy["obs_std"] = lockstep.obs_norm.std[i].copy()
        return results


def run_batch(inner: InnerLoop, jobs: Sequence[Job]) -> list[Result] | UserCodeError:
    """Dask task: one batch of inner loops on one single-threaded worker.

    The user's env or loss raising is returned, not raised: it would raise again on every try,
    and Dask retries a task that raises. ``checked`` raises it in the driver.
    """
    torch.set_num_threads(1)
    try:
        return inner.run(jobs)
    except UserCodeError as err:
        return err


def checked(batches: Sequence[list[Result] | UserCodeError]) -> list[list[Result]]:
    """The results of ``run_batch`` tasks, in order; raises the first user-code error."""
    for batch in batches:
        if isinstance(batch, UserCodeError):
            raise batch
    return list(batches)  # type: ignore[arg-type]
