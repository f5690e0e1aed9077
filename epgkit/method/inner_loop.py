"""The inner loop (Algorithm 2; the body of Algorithm 1): train a fresh policy with a loss.

Per inner loop: start from a random θ and a buffer of N zero rows; for t = 1..U act, step the
env, store (s, a, r, d); every M steps compute the loss of each of the last M steps (each over
the N-row window ending at it), shuffle them into minibatches and take one Adam step per
minibatch on θ and the loss's own trained state (the memory unit), with the blend of Eq. (10),
(1 − α)·L_φ + α·L_pg. The fitness is the mean return of a few evaluation episodes of the final
policy.

``InnerLoop.run`` reads as Algorithm 2 and runs K inner loops at once; what makes that fast
lives in helpers named for what they do: ``batch_envs`` (K envs stepped together),
``window`` (the rolling N-row history), ``inner_update`` (one update: minibatches, Eq. 10,
Adam), ``evaluation`` and ``seeds`` (each inner loop's own streams, so that its result does
not depend on its batch-mates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import epgkit.envs  # noqa: F401  (registers the task families on Dask workers too)
from epgkit.envs.ids import register_shipped, shipped_spec, takes_task_seed
from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method.alive import Alive
from epgkit.method.batch_envs import BatchEnvs
from epgkit.method.dims import Dims
from epgkit.method.evaluation import evaluate
from epgkit.method.inner_update import Learner, UpdateView
from epgkit.method.jobs import Job, Result
from epgkit.method.losses import EPGLoss, LossContext, PPOLoss
from epgkit.method.mlp import Params, flat_params, load_flat
from epgkit.method.normalize import RunningNorm
from epgkit.method.policies import actor, default_policy, fitting
from epgkit.method.seeds import Streams
from epgkit.method.user_code import UserCodeError, blame, inner_loop_parts, theirs
from epgkit.method.window import Window
from epgkit.registry import register

__all__ = ["InnerLoop", "Job", "Result", "UpdateView", "checked", "run_batch"]


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
        checks.refuse("InnerLoop", problems)

    def __getstate__(self) -> dict[str, Any]:  # the env's registration travels with the loop
        return {**self.__dict__, "_env_spec": shipped_spec(self.env_id)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        register_shipped(state.pop("_env_spec", None))
        self.__dict__.update(state)

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

    def theta_size(self) -> int:
        """Numbers in the policy's flat θ (``mlp.flat_params``): EPG+I's θ₀, a past policy."""
        return self._theta0(self.context()).size

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

    def run(
        self,
        jobs: Sequence[Job],
        keep_policy: bool = False,
        on_update: Callable[[UpdateView], None] | None = None,
    ) -> list[Result]:
        """Algorithm 2 for len(jobs) inner loops at once; their results in the jobs' order.

        Args:
            jobs: The inner loops to run.
            keep_policy: Return each trained policy in ``Result.policy`` (for rendering).
            on_update: Called at every update with what the loss is about to read (an
                observer: ``epgkit.tools.analyze``).
        """
        k, m = len(jobs), self.update_every
        envs = BatchEnvs([self.make_env(j.task_seed) for j in jobs], f"env {self.env_id!r}")
        dims = envs.dims
        policy, ctx = self.policy_for(dims), self.context(dims)
        seeds = Streams.of([j.seed for j in jobs])
        # θ ~ random (always drawn, so the streams do not depend on the start), then a job's
        # own θ₀ or EPG+I's evolved one written over it (_phi).
        theta = policy.init(dims, seeds.init)
        learner = Learner(
            self.loss, self.guide, ctx, policy, theta, self._phi(jobs, ctx, theta),
            np.array([j.alpha for j in jobs], np.float32), seeds.init,
            lr=self.lr, minibatch=self.minibatch, passes=self.passes, reduce=self.reduce,
        )  # fmt: skip
        theta = learner.theta  # now views of Adam's flat buffer, which it updates in place
        act = actor(policy, theta, {name: t.detach().numpy() for name, t in theta.items()})
        window = Window(k, dims, ctx.dist_dim, self.buffer_size, m)
        obs_norm, rew_norm = RunningNorm(k, dims.obs_dim), RunningNorm(k, 1)
        act_norm = None if dims.discrete else RunningNorm(k, dims.act_dim)
        one_hot = np.eye(dims.act_dim, dtype=np.float32) if dims.discrete else None
        alive, kl = Alive(k), [[] for _ in range(k)]

        obs = envs.reset_all(seeds.reset_seeds())
        for t in range(self.steps):
            row = window.row(t)
            if t % m == 0:  # the action noise of the next M steps
                noise = np.stack([policy.draw_noise(rng, m, dims) for rng in seeds.act])
            # Act: a ~ π_θ(·|s), s normalized with the running moments.
            obs_norm.update(obs)
            s = obs_norm(obs, out=window.obs[:, row])
            pi, a, logp = act(s, noise[:, t % m])
            window.pi_old[:, row], window.act_raw[:, row], window.logp_old[:, row] = pi, a, logp
            if dims.signal_dim:
                envs.task_signals(window.signal[:, row])
            if one_hot is not None:
                window.act[:, row] = one_hot[a[:, 0].astype(int)]
            else:
                act_norm.update(a)
                act_norm(a, out=window.act[:, row])
            # Step the envs; store r (normalized, and scaled only for PG returns) and d.
            reward = envs.step(a, obs, t + 1, alive)[:, None]
            rew_norm.update(reward)
            rew_norm(reward, out=window.reward[:, row, None])
            rew_norm(reward, center=False, out=window.reward_scaled[:, row, None])
            window.done[:, row] = envs.done
            window.progress[:, row] = t / self.steps
            # Every M steps: update θ on the last M steps, then slide the window by M.
            if (t + 1) % m == 0:
                obs_norm(obs, out=window.next_obs)
                order = seeds.permutations(m, self.passes)
                step_kl = learner.update(window.full, window.recent, order, alive, on_update, jobs)
                for i, value in enumerate(step_kl.tolist()):
                    kl[i].append(value)
                window.slide()
                if not alive.indices:
                    break

        # Evaluate the final policy: the fitness.
        noise = None
        if not self.eval_deterministic:
            noise = lambda: np.stack([policy.draw_noise(r, 1, dims)[0] for r in seeds.act])  # noqa: E731
        returns, eval_steps = evaluate(
            envs, act, obs_norm, noise, alive.failed, self.eval_episodes, self.eval_max_steps
        )
        tasks, steps = envs.close(), t + 1
        results = [Result.of(job, returns[i], steps + eval_steps[i], tasks[i], alive.failed[i],
                             envs.episodes[i], kl[i]) for i, job in enumerate(jobs)]  # fmt: skip
        kept = [i for i, job in enumerate(jobs) if job.keep_theta]
        for i, row in zip(kept, flat_params(theta)[kept] if kept else [], strict=True):
            results[i].theta = row.detach().numpy().copy()
        for i, result in enumerate(results if keep_policy else []):
            result.policy = {name: p[i].detach().numpy().copy() for name, p in theta.items()}
            result.policy["obs_mean"] = obs_norm.mean[i].copy()
            result.policy["obs_std"] = obs_norm.std[i].copy()
        return results

    def _phi(self, jobs: Sequence[Job], ctx: LossContext, theta: Params) -> torch.Tensor:
        """The loss's φ of every job, (K, P); where θ starts is written into ``theta``: a
        job's own ``theta0`` (a past policy), else under EPG+I the evolved vector's tail θ₀,
        else the random θ already there."""
        with blame(f"loss {type(self.loss).__name__}", "phi_size"):
            p = self.loss.phi_size(ctx)
        flat = np.stack([np.asarray(j.phi, np.float32).reshape(-1) for j in jobs])
        if self.evolve_init:
            load_flat(theta, torch.from_numpy(flat[:, p:]))
        elif flat.shape[1] != p:
            raise ValueError(f"φ has {flat.shape[1]} numbers, the loss {p}")
        if any(j.theta0 is not None for j in jobs):
            start = flat_params(theta).clone()
            for i, j in enumerate(jobs):
                if j.theta0 is not None:
                    given = torch.as_tensor(np.asarray(j.theta0, np.float32).reshape(-1))
                    if given.numel() != start.shape[1]:
                        raise ValueError(
                            f"Job.theta0 has {given.numel()} numbers, the policy {start.shape[1]}"
                        )
                    start[i] = given
            load_flat(theta, start)
        return torch.from_numpy(np.ascontiguousarray(flat[:, :p]))


def run_batch(
    inner: InnerLoop, jobs: Sequence[Job], keep_policy: bool = False
) -> list[Result] | UserCodeError:
    """Dask task: one batch of inner loops on one single-threaded worker (or in this process,
    made single-threaded likewise: torch's threads change the bits of a long inner loop).

    The user's env or loss raising is returned, not raised: it would raise again on every try,
    and Dask retries a task that raises. ``checked`` raises it in the driver.
    """
    torch.set_num_threads(1)
    try:
        return inner.run(jobs, keep_policy)
    except Exception as err:  # noqa: BLE001  (epgkit's own errors are raised again below)
        if (mine := theirs(err, inner_loop_parts(inner))) is None:
            raise
        return mine


def checked(batches: Sequence[list[Result] | UserCodeError]) -> list[list[Result]]:
    """The results of ``run_batch`` tasks, in order; raises the first user-code error."""
    for batch in batches:
        if isinstance(batch, UserCodeError):
            raise batch
    return list(batches)  # type: ignore[arg-type]
