"""The inner loop (Algorithm 2; the body of Algorithm 1): train a fresh policy with a loss.

K inner loops run in lockstep: their policies are stacked weights, their losses are evaluated
in one batched call, their envs are stepped one after another into preallocated buffers. Each
inner loop draws from its own seeds only, so its result does not depend on its batch-mates.

Per inner loop: start from a random θ and a buffer of N zero tuples; for t = 1..U act, step,
append (s, a, r, d); every M steps compute the loss of each of the last M steps (each over the
N-row window ending at it), shuffle them into minibatches and take one Adam step per minibatch
on θ and the loss's own trained state (the memory unit). The blend of Eq. (10),
(1 − α)·L_φ + α·L_pg, is applied per inner loop. Fitness is the mean return of a few
evaluation episodes of the final policy.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import load_env_creator

import epgkit.envs  # noqa: F401  (registers the task families on Dask workers too)
from epgkit.dims import Dims
from epgkit.envs import task_of
from epgkit.losses import EPGLoss, History, LossContext, PPOLoss
from epgkit.normalize import RunningNorm
from epgkit.policies import GaussianMLP
from epgkit.registry import register

# Seed streams of one inner loop, spawned from its seed in this order.
_INIT, _ACT, _SHUFFLE, _ENV = range(4)


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


@register("inner_loop")
@dataclass(frozen=True)
class InnerLoop:
    """Algorithm 2 and its hyperparameters: a plain, picklable object gin builds once.

    Attributes:
        env_id: Gymnasium id of the task family.
        loss: The loss trained with (L_φ), e.g. ``@EPGLoss()``, or ``@PPOLoss()`` as a baseline.
        guide: L_pg blended in with weight α (Eq. 10), or None.
        policy: The policy architecture.
        steps: U, environment steps of training.
        update_every: M, steps between updates.
        buffer_size: N, rows of history the loss sees.
        minibatch: Steps per Adam step (each of the last M steps is used exactly once).
        lr: Adam step size δ_in of the inner loop.
        eval_episodes: Evaluation episodes of the final policy that make the fitness.
        eval_deterministic: Evaluate with the mean action instead of sampling.
        eval_max_steps: Cap on an evaluation episode for envs without a time limit.
        reduce: How per-step losses make a minibatch loss: "sum" (paper) or "mean".
        env_kwargs: Extra constructor arguments of the env, as (name, value) pairs.
    """

    env_id: str = "epgkit/PointGoal-v0"
    loss: Any = EPGLoss()
    guide: Any = PPOLoss()
    policy: Any = GaussianMLP()
    steps: int = 8192
    update_every: int = 64
    buffer_size: int = 512
    minibatch: int = 32
    lr: float = 1e-3
    eval_episodes: int = 3
    eval_deterministic: bool = False
    eval_max_steps: int = 1000
    reduce: str = "sum"
    env_kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        m, n, b = self.update_every, self.buffer_size, self.minibatch
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
            f"eval_episodes must be ≥ 1, got {self.eval_episodes}"
            if self.eval_episodes < 1
            else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("InnerLoop: " + "; ".join(problems))

    def make_env(self, task_seed: int) -> gym.Env:
        """The env of one task; envs that are not task families ignore the task seed."""
        kwargs = dict(self.env_kwargs)
        if _takes_task_seed(self.env_id):
            kwargs["task_seed"] = task_seed
        return gym.make(self.env_id, disable_env_checker=True, **kwargs)

    def dims(self) -> Dims:
        """The dims of this inner loop's env family."""
        env = self.make_env(0)
        try:
            return Dims.of(env)
        finally:
            env.close()

    def context(self, dims: Dims | None = None) -> LossContext:
        """The shapes the loss is built for."""
        dims = dims or self.dims()
        return LossContext(dims, self.policy.dist_dim(dims), self.buffer_size, self.update_every)

    def phi_size(self) -> int:
        """Dimension of the evolved loss parameters φ."""
        return self.loss.phi_size(self.context())

    def init_phi(self, rng: np.random.Generator) -> np.ndarray:
        """An initial φ."""
        return self.loss.init_phi(self.context(), rng)

    def run(self, jobs: Sequence[Job]) -> list[Result]:
        """Runs len(jobs) inner loops in lockstep and returns their results in order."""
        return _Lockstep(self, jobs).run()


def _takes_task_seed(env_id: str) -> bool:
    module, _, name = env_id.rpartition(":")
    if module:  # gymnasium's "module:Name-v0" form: the module registers the env
        importlib.import_module(module)
    entry = gym.spec(name).entry_point
    creator = load_env_creator(entry) if isinstance(entry, str) else entry
    try:
        return "task_seed" in inspect.signature(creator).parameters
    except (TypeError, ValueError):
        return False


def run_batch(inner: InnerLoop, jobs: Sequence[Job]) -> list[Result]:
    """Dask task: one batch of inner loops on one single-threaded worker."""
    torch.set_num_threads(1)
    return inner.run(jobs)


class _Lockstep:
    """The state of K inner loops advancing together; lives for one ``InnerLoop.run``."""

    def __init__(self, cfg: InnerLoop, jobs: Sequence[Job]) -> None:
        self.cfg, self.jobs, k = cfg, list(jobs), len(jobs)
        self.envs = [cfg.make_env(j.task_seed) for j in self.jobs]
        self.dims = d = Dims.of(self.envs[0])
        self.ctx = cfg.context(d)
        streams = [np.random.SeedSequence(j.seed).spawn(4) for j in self.jobs]
        self.rngs = [[np.random.default_rng(s) for s in ss] for ss in streams]
        init_rngs = [r[_INIT] for r in self.rngs]
        self.theta = cfg.policy.init(d, init_rngs)
        p = cfg.loss.phi_size(self.ctx)
        phi = np.stack([np.asarray(j.phi, np.float32).reshape(p) for j in self.jobs])
        self.phi = torch.from_numpy(phi)
        self.alpha = torch.tensor([j.alpha for j in self.jobs], dtype=torch.float32)
        self.loss_state = cfg.loss.init_state(self.ctx, self.phi, init_rngs)
        self.guide_state = (
            cfg.guide.init_state(self.ctx, self.phi, init_rngs) if cfg.guide is not None else {}
        )
        params = [*self.theta.values(), *self.loss_state.values(), *self.guide_state.values()]
        for t in params:
            t.requires_grad_(True)
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))

        rows = cfg.buffer_size + cfg.update_every - 1  # T: N-row windows of the last M steps
        a_in = d.act_dim
        a_raw = 1 if d.discrete else d.act_dim
        self.buf = {
            "obs": np.zeros((k, rows, d.obs_dim), np.float32),
            "act": np.zeros((k, rows, a_in), np.float32),
            "act_raw": np.zeros((k, rows, a_raw), np.float32),
            "reward": np.zeros((k, rows), np.float32),
            "reward_scaled": np.zeros((k, rows), np.float32),
            "done": np.zeros((k, rows), np.float32),
            "signal": np.zeros((k, rows, d.signal_dim), np.float32),
            "logp_old": np.zeros((k, rows), np.float32),
            "pi_old": np.zeros((k, rows, self.ctx.dist_dim), np.float32),
        }
        self.obs_norm = RunningNorm(k, d.obs_dim)
        self.act_norm = RunningNorm(k, a_raw)
        self.rew_norm = RunningNorm(k, 1)
        self.low = np.array(d.act_low, np.float32) if not d.discrete else None
        self.high = np.array(d.act_high, np.float32) if not d.discrete else None
        self.failed: list[str | None] = [None] * k
        self.episodes: list[list[tuple[int, float]]] = [[] for _ in range(k)]
        self.kl: list[list[float]] = [[] for _ in range(k)]

    # --- acting -------------------------------------------------------------------------
    def _env_action(self, act: np.ndarray, k: int) -> Any:
        if self.dims.discrete:
            return int(act[k, 0])
        return np.clip(act[k], self.low, self.high)

    def _policy(self, obs_n: np.ndarray, noise: np.ndarray | None):
        with torch.no_grad():
            dist = self.cfg.policy.dist(self.theta, torch.from_numpy(obs_n).unsqueeze(1))
            if noise is None:
                act = self.cfg.policy.mode(dist)
            else:
                act = self.cfg.policy.sample(dist, torch.from_numpy(noise).unsqueeze(1))
            logp = self.cfg.policy.log_prob(dist, act)
        return dist[:, 0].numpy(), act[:, 0].numpy(), logp[:, 0].numpy()

    def _step_envs(self, act: np.ndarray, obs: np.ndarray, ret: np.ndarray, t: int):
        k = len(self.envs)
        reward, done = np.zeros(k, np.float32), np.zeros(k, np.float32)
        for i, env in enumerate(self.envs):
            if self.failed[i]:
                continue
            o, r, term, trunc, _ = env.step(self._env_action(act, i))
            if not (np.isfinite(r) and np.all(np.isfinite(o))):
                self.failed[i] = f"non-finite observation or reward at step {t}"
                continue
            ret[i] += r
            reward[i], done[i] = r, float(term or trunc)
            if term or trunc:
                self.episodes[i].append((t, float(ret[i])))
                ret[i] = 0.0
                o, _ = env.reset()
            obs[i] = o
        return reward, done

    def _signal(self) -> np.ndarray:
        if not self.dims.signal_dim:
            return np.zeros((len(self.envs), 0), np.float32)
        return np.stack([e.unwrapped.task_signal() for e in self.envs]).astype(np.float32)

    def run(self) -> list[Result]:
        cfg, k, m = self.cfg, len(self.envs), self.cfg.update_every
        obs = np.stack(
            [
                env.reset(seed=int(r[_ENV].integers(2**31)))[0]
                for env, r in zip(self.envs, self.rngs, strict=True)
            ]
        ).astype(np.float64)
        ret = np.zeros(k)
        first = self.buf["done"].shape[1] - m  # first row of the last M
        for t in range(cfg.steps):
            j = first + t % m
            if t % m == 0:
                noise = np.stack([cfg.policy.draw_noise(r[_ACT], m, self.dims) for r in self.rngs])
            self.obs_norm.update(obs)
            obs_n = self.obs_norm(obs)
            dist, act, logp = self._policy(obs_n, noise[:, t % m])
            self.buf["obs"][:, j], self.buf["pi_old"][:, j] = obs_n, dist
            self.buf["act_raw"][:, j], self.buf["logp_old"][:, j] = act, logp
            self.buf["signal"][:, j] = self._signal()
            if self.dims.discrete:
                self.buf["act"][:, j] = np.eye(self.dims.act_dim, dtype=np.float32)[
                    act[:, 0].astype(int)
                ]
            else:
                self.act_norm.update(act)
                self.buf["act"][:, j] = self.act_norm(act)
            reward, done = self._step_envs(act, obs, ret, t + 1)
            self.rew_norm.update(reward[:, None])
            self.buf["reward"][:, j] = self.rew_norm(reward[:, None])[:, 0]
            self.buf["reward_scaled"][:, j] = self.rew_norm(reward[:, None], center=False)[:, 0]
            self.buf["done"][:, j] = done
            if (t + 1) % m == 0:
                self._update(self.obs_norm(obs))
                for arr in self.buf.values():  # slide the window by M rows
                    arr[:, :-m] = arr[:, m:]
                if all(self.failed):
                    break
        returns = self._evaluate()
        return [self._result(i, returns[i], (t + 1) + self._eval_steps[i]) for i in range(k)]

    # --- learning -----------------------------------------------------------------------
    def _history(self, next_obs: np.ndarray, start: int) -> History:
        b = {key: torch.from_numpy(arr[:, start:]) for key, arr in self.buf.items()}
        return History(next_obs=torch.from_numpy(next_obs), **b)

    def _update(self, next_obs: np.ndarray) -> None:
        cfg, k, m = self.cfg, len(self.envs), self.cfg.update_every
        use_loss = bool((self.alpha < 1).any())
        use_guide = cfg.guide is not None and bool((self.alpha > 0).any())
        needs_history = (use_loss and cfg.loss.needs_history) or (
            use_guide and cfg.guide.needs_history
        )
        total_rows = self.buf["done"].shape[1]
        hist = self._history(next_obs, 0 if needs_history else total_rows - m)
        t_rows = hist.done.shape[1]
        with torch.no_grad():
            prep_l = cfg.loss.begin_update(self.ctx, self.loss_state, hist) if use_loss else {}
            prep_g = cfg.guide.begin_update(self.ctx, self.guide_state, hist) if use_guide else {}
        order = np.stack([r[_SHUFFLE].permutation(m) for r in self.rngs]) + (t_rows - m)
        alive = torch.tensor([f is None for f in self.failed])
        for s in range(0, m, cfg.minibatch):
            rows = torch.from_numpy(order[:, s : s + cfg.minibatch])
            pi = cfg.policy.dist(self.theta, hist.obs)
            logp = cfg.policy.log_prob(pi, hist.act_raw)
            per_loop = torch.zeros(k)
            if use_loss:
                steps = cfg.loss(self.ctx, self.phi, self.loss_state, hist, pi, logp, rows, prep_l)
                per_loop = per_loop + (1 - self.alpha) * self._reduce(steps)
            if use_guide:
                steps = cfg.guide(
                    self.ctx, self.phi, self.guide_state, hist, pi, logp, rows, prep_g
                )
                per_loop = per_loop + self.alpha * self._reduce(steps)
            finite = torch.isfinite(per_loop.detach())
            for i in np.flatnonzero(~finite.numpy() & alive.numpy()):
                self.failed[i] = "non-finite loss"
            alive = alive & finite
            self.opt.zero_grad(set_to_none=False)
            torch.where(alive, per_loop, torch.zeros_like(per_loop)).sum().backward()
            self.opt.step()
        with torch.no_grad():
            recent = hist.obs[:, -m:]
            after = cfg.policy.dist(self.theta, recent)
            kl = cfg.policy.kl(hist.pi_old[:, -m:], after).mean(1).numpy()
            bad = ~np.isfinite(kl) | ~np.all(
                [np.isfinite(p.reshape(k, -1)).all(1).numpy() for p in self.theta.values()], 0
            )
        for i in range(k):
            if bad[i] and not self.failed[i]:
                self.failed[i] = "non-finite policy parameters"
            self.kl[i].append(float(kl[i]) if math.isfinite(kl[i]) else math.nan)

    def _reduce(self, steps: torch.Tensor) -> torch.Tensor:
        return steps.sum(1) if self.cfg.reduce == "sum" else steps.mean(1)

    # --- evaluation ---------------------------------------------------------------------
    def _evaluate(self) -> list[list[float]]:
        cfg, k = self.cfg, len(self.envs)
        returns: list[list[float]] = [[] for _ in range(k)]
        self._eval_steps = [0] * k
        obs = np.stack([env.reset()[0] for env in self.envs]).astype(np.float64)
        ep_ret, ep_len = np.zeros(k), np.zeros(k, int)
        active = [not f for f in self.failed]
        while any(active):
            noise = (
                None
                if cfg.eval_deterministic
                else np.stack([cfg.policy.draw_noise(r[_ACT], 1, self.dims)[0] for r in self.rngs])
            )
            _, act, _ = self._policy(self.obs_norm(obs), noise)
            for i, env in enumerate(self.envs):
                if not active[i]:
                    continue
                o, r, term, trunc, _ = env.step(self._env_action(act, i))
                ep_ret[i] += r
                ep_len[i] += 1
                self._eval_steps[i] += 1
                if term or trunc or ep_len[i] >= cfg.eval_max_steps:
                    returns[i].append(float(ep_ret[i]))
                    ep_ret[i], ep_len[i] = 0.0, 0
                    o, _ = env.reset()
                    active[i] = len(returns[i]) < cfg.eval_episodes
                obs[i] = o
        return returns

    def _result(self, i: int, returns: list[float], env_steps: int) -> Result:
        job = self.jobs[i]
        fitness = float(np.mean(returns)) if returns and not self.failed[i] else -math.inf
        if not math.isfinite(fitness) and not self.failed[i]:
            self.failed[i] = "non-finite evaluation return"
        result = Result(
            job.index,
            job.candidate,
            job.task_seed,
            job.seed,
            fitness,
            returns,
            env_steps,
            task_of(self.envs[i]),
            self.failed[i],
            self.episodes[i],
            self.kl[i],
        )
        self.envs[i].close()
        return result
