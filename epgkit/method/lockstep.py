"""The lockstep engine behind ``InnerLoop.run``: K inner loops advancing together.

K inner loops run in lockstep: their policies are stacked weights, their losses are evaluated
in one batched call, their envs are stepped one after another into preallocated buffers. Each
inner loop draws from its own seeds only, so its result does not depend on its batch-mates.

Speed (benchmarks/inner_loop.py): a Hopper step costs ~60 µs of MuJoCo physics, so the loop
around it must cost little. Acting is NumPy on views of the torch weights (torch's per-call
overhead is larger than the arithmetic for one observation); envs whose only wrappers are
gymnasium's time limit and order check are stepped through their unwrapped core with the time
limit counted here (same results, without the wrapper calls); every trainable tensor lives in
one flat buffer that a hand-written Adam (``epgkit.method.flat_adam``) updates with a few vector
operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from epgkit.envs import task_of
from epgkit.method.dims import Dims
from epgkit.method.flat_adam import FlatAdam
from epgkit.method.losses import History
from epgkit.method.normalize import RunningNorm
from epgkit.method.policies import load_flat
from epgkit.method.user_code import UserCodeError, blame, blamed

if TYPE_CHECKING:  # only for hints: epgkit.method.inner_loop imports this module
    from epgkit.method.inner_loop import InnerLoop, Job, Result

# Seed streams of one inner loop, spawned from its seed in this order.
_INIT, _ACT, _SHUFFLE, _ENV = range(4)

# What gym.make wraps an env in: none changes a step, so `_core` may step beneath them.
_PASSIVE_WRAPPERS = (TimeLimit, OrderEnforcing, PassiveEnvChecker)


def _core(env: gym.Env) -> tuple[gym.Env, int | None]:
    """What to step: the unwrapped env and its time limit when the wrappers only check order
    and count steps (what ``gym.make`` adds), else the env itself with no limit to count."""
    limit, inner = None, env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, TimeLimit) and hasattr(inner, "_max_episode_steps"):
            limit = inner._max_episode_steps
        elif not isinstance(inner, _PASSIVE_WRAPPERS):
            return env, None
        inner = inner.env
    return inner, limit


class Lockstep:
    """The state of K inner loops advancing together; lives for one ``InnerLoop.run``.

    ``on_update``, if given, is called with this object at every update, once the history is
    complete and before the first Adam step: an observer (``epgkit.tools.analyze``) that reads the
    buffer, θ and the loss's state, and must change nothing (nor draw from the seed streams).
    """

    def __init__(
        self,
        cfg: InnerLoop,
        jobs: Sequence[Job],
        on_update: Callable[[Lockstep], None] | None = None,
    ) -> None:
        self.cfg, self.jobs, k = cfg, list(jobs), len(jobs)
        self.on_update = on_update
        # Who is named when the user's code raises (the env, the loss, the guidance loss).
        self.env_name = f"env {cfg.env_id!r}"
        self.loss_name = f"loss {type(cfg.loss).__name__}"
        self.guide_name = f"guidance loss {type(cfg.guide).__name__}"
        self.envs = [cfg.make_env(j.task_seed) for j in self.jobs]
        self.cores, self.limits = zip(*(_core(env) for env in self.envs), strict=True)
        self.elapsed = [0] * k  # steps since reset, for the time limits counted here
        self.dims = d = Dims.of(self.envs[0])
        self.policy = cfg.policy_for(d)
        self.ctx = cfg.context(d)
        streams = [np.random.SeedSequence(j.seed).spawn(4) for j in self.jobs]
        self.rngs = [[np.random.default_rng(s) for s in ss] for ss in streams]
        init_rngs = [r[_INIT] for r in self.rngs]
        self.theta = self.policy.init(d, init_rngs)
        with blame(self.loss_name, "phi_size"):
            p = cfg.loss.phi_size(self.ctx)
        flat = np.stack([np.asarray(j.phi, np.float32).reshape(-1) for j in self.jobs])
        if cfg.evolve_init:  # EPG+I: the evolved vector is φ then θ₀, where training starts
            load_flat(self.theta, torch.from_numpy(flat[:, p:]))
        elif flat.shape[1] != p:
            raise ValueError(f"φ has {flat.shape[1]} numbers, the loss {p}")
        self.phi = torch.from_numpy(np.ascontiguousarray(flat[:, :p]))
        alpha = np.array([j.alpha for j in self.jobs], np.float32)
        self.alpha = torch.from_numpy(alpha)
        self.use_loss = bool((alpha < 1).any())
        self.use_guide = cfg.guide is not None and bool((alpha > 0).any())
        # log π(a|s) over the whole history costs a few ops per minibatch: only if read.
        self.needs_logp = (self.use_loss and getattr(cfg.loss, "needs_logp", True)) or (
            self.use_guide and getattr(cfg.guide, "needs_logp", True)
        )
        with blame(self.loss_name, "init_state"):
            self.loss_state = cfg.loss.init_state(self.ctx, self.phi, init_rngs)
        with blame(self.guide_name, "init_state"):
            self.guide_state = (
                cfg.guide.init_state(self.ctx, self.phi, init_rngs) if cfg.guide is not None else {}
            )
        # Only what this batch trains: with α = 0 (or 1) for all K, the guide's value net (or
        # the loss's memory) gets no gradient, and Adam would leave it unchanged anyway.
        trained = [self.theta]
        trained += [self.loss_state] if self.use_loss else []
        trained += [self.guide_state] if self.use_guide else []
        self.opt = FlatAdam(trained, cfg.lr)
        self.theta_size = sum(t.numel() for t in self.theta.values())  # θ comes first
        # NumPy views of θ: acting reads the weights Adam updates in place, with no copy.
        self.theta_np = {name: t.detach().numpy() for name, t in self.theta.items()}
        self.numpy_act = hasattr(self.policy, "act")

        m = cfg.update_every
        rows = cfg.buffer_size + m - 1  # T: N-row windows of the last M steps
        a_raw = 1 if d.discrete else d.act_dim
        self.buf = {
            "obs": np.zeros((k, rows, d.obs_dim), np.float32),
            "act": np.zeros((k, rows, d.act_dim), np.float32),
            "act_raw": np.zeros((k, rows, a_raw), np.float32),
            "reward": np.zeros((k, rows), np.float32),
            "reward_scaled": np.zeros((k, rows), np.float32),
            "done": np.zeros((k, rows), np.float32),
            "signal": np.zeros((k, rows, d.signal_dim), np.float32),
            "logp_old": np.zeros((k, rows), np.float32),
            "pi_old": np.zeros((k, rows, self.ctx.dist_dim), np.float32),
            "progress": np.zeros((k, rows), np.float32),
        }
        self.next_obs = np.zeros((k, d.obs_dim), np.float32)
        # Tensors share memory with the buffers, so the History is built once; sliding the
        # window in place updates it. Losses that read only the last M rows get a view of those.
        full = {key: torch.from_numpy(arr) for key, arr in self.buf.items()}
        next_obs = torch.from_numpy(self.next_obs)
        self.hist_full = History(next_obs=next_obs, **full)
        self.hist_recent = History(
            next_obs=next_obs, **{key: t[:, rows - m :] for key, t in full.items()}
        )
        self.obs_norm = RunningNorm(k, d.obs_dim)
        self.act_norm = RunningNorm(k, a_raw)
        self.rew_norm = RunningNorm(k, 1)
        self.low = np.array(d.act_low, np.float32) if not d.discrete else None
        self.high = np.array(d.act_high, np.float32) if not d.discrete else None
        self.one_hot = np.eye(d.act_dim, dtype=np.float32) if d.discrete else None
        self.failed: list[str | None] = [None] * k
        self.alive = list(range(k))  # inner loops that have not failed
        self.episodes: list[list[tuple[int, float]]] = [[] for _ in range(k)]
        self.kl: list[list[float]] = [[] for _ in range(k)]
        # Per-step scratch, reused every step: the next observations with the reward beside
        # them (one finiteness check covers both), the done flags, the running returns.
        self.step_out = np.zeros((k, d.obs_dim + 1))
        self.done = np.zeros(k, np.float32)
        self.ret = np.zeros(k)

    # --- acting -------------------------------------------------------------------------
    def _act(self, obs_n: np.ndarray, noise: np.ndarray | None):
        """π(·|s), a and log π(a|s) for one normalized observation per inner loop."""
        if self.numpy_act:
            return self.policy.act(self.theta_np, obs_n, noise)
        policy = self.policy  # a policy without a NumPy path: torch, one call per step
        with torch.no_grad():
            dist = policy.dist(self.theta, torch.from_numpy(obs_n).unsqueeze(1))
            if noise is None:
                act = policy.mode(dist)
            else:
                act = policy.sample(dist, torch.from_numpy(noise).unsqueeze(1))
            logp = policy.log_prob(dist, act)
        return dist[:, 0].numpy(), act[:, 0].numpy(), logp[:, 0].numpy()

    def _env_actions(self, act: np.ndarray) -> Any:
        if self.dims.discrete:
            return act[:, 0].astype(int).tolist()
        return np.minimum(np.maximum(act, self.low), self.high)  # np.clip, without its overhead

    def _step(self, i: int, action: Any) -> tuple[np.ndarray, float, bool]:
        """Steps env i; the time limit is counted here when the env is stepped unwrapped."""
        try:
            o, r, term, trunc, _ = self.cores[i].step(action)
        except Exception as err:  # noqa: BLE001  (whatever the user's env raises)
            raise blamed(self.env_name, "step", err) from err
        self.elapsed[i] += 1
        return o, r, bool(term or trunc or self.elapsed[i] == self.limits[i])

    def _reset(self, i: int, seed: int | None = None) -> np.ndarray:
        self.elapsed[i] = 0
        try:
            if seed is not None:  # the first reset goes through the wrappers: they start counting
                return self.envs[i].reset(seed=seed)[0]
            return self.cores[i].reset()[0]
        except Exception as err:  # noqa: BLE001  (whatever the user's env raises)
            raise blamed(self.env_name, "reset", err) from err

    def _step_envs(self, act: np.ndarray, obs: np.ndarray, t: int) -> np.ndarray:
        """Steps the live envs, updates obs, returns and self.done; returns the rewards."""
        env_act, out, done = self._env_actions(act), self.step_out, self.done
        cores, limits, elapsed = self.cores, self.limits, self.elapsed
        ended = []
        try:  # costs nothing unless the env raises
            for i in self.alive:  # the hot loop: one env step each, nothing else
                o, r, term, trunc, _ = cores[i].step(env_act[i])
                elapsed[i] += 1
                out[i, :-1], out[i, -1] = o, r
                if term or trunc or elapsed[i] == limits[i]:
                    ended.append(i)
        except Exception as err:  # noqa: BLE001  (whatever the user's env raises or returns)
            raise blamed(self.env_name, "step", err) from err
        if not math.isfinite(out.sum()):  # physics failure: stops that inner loop only
            bad = ~np.isfinite(out).all(1)
            for i in [i for i in self.alive if bad[i]]:
                self.failed[i] = f"non-finite observation or reward at step {t}"
                self.alive.remove(i)
                out[i] = 0.0  # its reward counts as 0 from now on; its buffer rows stay finite
                out[i, :-1] = obs[i]
            ended = [i for i in ended if not bad[i]]
        obs[:] = out[:, :-1]
        reward = out[:, -1]
        self.ret += reward
        done[:] = 0.0
        for i in ended:
            done[i] = 1.0
            self.episodes[i].append((t, float(self.ret[i])))
            self.ret[i] = 0.0
            obs[i] = self._reset(i)
        return reward

    def run(self) -> list[Result]:
        cfg, k, m, buf = self.cfg, len(self.envs), self.cfg.update_every, self.buf
        seeds = [int(r[_ENV].integers(2**31)) for r in self.rngs]
        obs = np.stack([self._reset(i, seed) for i, seed in enumerate(seeds)]).astype(np.float64)
        first = buf["done"].shape[1] - m  # first row of the last M
        b_obs, b_pi, b_act_raw, b_logp = buf["obs"], buf["pi_old"], buf["act_raw"], buf["logp_old"]
        b_act, b_rew, b_rew_scaled, b_done = (
            buf["act"],
            buf["reward"],
            buf["reward_scaled"],
            buf["done"],
        )
        for t in range(cfg.steps):
            j = first + t % m
            if t % m == 0:
                noise = np.stack([self.policy.draw_noise(r[_ACT], m, self.dims) for r in self.rngs])
            self.obs_norm.update(obs)
            obs_n = self.obs_norm(obs, out=b_obs[:, j])
            dist, act, logp = self._act(obs_n, noise[:, t % m])
            b_pi[:, j], b_act_raw[:, j], b_logp[:, j] = dist, act, logp
            if self.dims.signal_dim:
                with blame(self.env_name, "task_signal"):
                    for i, core in enumerate(self.cores):
                        buf["signal"][i, j] = core.unwrapped.task_signal()
            if self.dims.discrete:
                b_act[:, j] = self.one_hot[act[:, 0].astype(int)]
            else:
                self.act_norm.update(act)
                self.act_norm(act, out=b_act[:, j])
            reward = self._step_envs(act, obs, t + 1)[:, None]
            self.rew_norm.update(reward)
            self.rew_norm(reward, out=b_rew[:, j, None])
            self.rew_norm(reward, center=False, out=b_rew_scaled[:, j, None])
            b_done[:, j] = self.done
            buf["progress"][:, j] = t / cfg.steps
            if (t + 1) % m == 0:
                self.obs_norm(obs, out=self.next_obs)
                self._update()
                for arr in buf.values():  # slide the window by M rows
                    arr[:, :-m] = arr[:, m:]
                if not self.alive:
                    break
        returns = self._evaluate()
        return [self._result(i, returns[i], (t + 1) + self._eval_steps[i]) for i in range(k)]

    # --- learning -----------------------------------------------------------------------
    def _fail(self, bad: np.ndarray, why: str) -> None:
        for i in [i for i in self.alive if bad[i]]:
            self.failed[i] = why
            self.alive.remove(i)

    def _update(self) -> None:
        if self.on_update is not None:
            self.on_update(self)
        cfg, k, m = self.cfg, len(self.envs), self.cfg.update_every
        use_loss, use_guide = self.use_loss, self.use_guide
        needs_history = (use_loss and cfg.loss.needs_history) or (
            use_guide and cfg.guide.needs_history
        )
        hist = self.hist_full if needs_history else self.hist_recent
        t_rows = hist.done.shape[1]
        with torch.no_grad():
            with blame(self.loss_name, "begin_update"):
                prep_l = cfg.loss.begin_update(self.ctx, self.loss_state, hist) if use_loss else {}
            with blame(self.guide_name, "begin_update"):
                prep_g = (
                    cfg.guide.begin_update(self.ctx, self.guide_state, hist) if use_guide else {}
                )
        # One pass is the paper's inner loop; hand-designed baselines may take more (PPO epochs).
        passes = [np.stack([r[_SHUFFLE].permutation(m) for r in self.rngs])
                  for _ in range(cfg.passes)]  # fmt: skip
        order = np.concatenate(passes, axis=1) + (t_rows - m)
        alive = torch.tensor([f is None for f in self.failed])
        for s in range(0, m * cfg.passes, cfg.minibatch):
            rows = torch.from_numpy(order[:, s : s + cfg.minibatch])
            pi = self.policy.dist(self.theta, hist.obs)
            logp = self.policy.log_prob(pi, hist.act_raw) if self.needs_logp else None
            per_loop = torch.zeros(k)
            if use_loss:
                steps = self._per_step(
                    self.loss_name, cfg.loss, self.loss_state, prep_l, hist, pi, logp, rows
                )
                per_loop = per_loop + (1 - self.alpha) * self._reduce(steps)
            if use_guide:
                steps = self._per_step(
                    self.guide_name, cfg.guide, self.guide_state, prep_g, hist, pi, logp, rows
                )
                per_loop = per_loop + self.alpha * self._reduce(steps)
            finite = torch.isfinite(per_loop.detach())
            if not bool(finite.all()):
                self._fail(~finite.numpy(), "non-finite loss")
                alive = alive & finite
            self.opt.zero_grad()
            with blame(self.loss_name if use_loss else self.guide_name, "the backward pass"):
                torch.where(alive, per_loop, torch.zeros_like(per_loop)).sum().backward()
            self.opt.step()
        with torch.no_grad():
            after = self.policy.dist(self.theta, hist.obs[:, -m:])
            kl = self.policy.kl(hist.pi_old[:, -m:], after).mean(1).numpy()
            bad = ~np.isfinite(kl)
            if not bool(torch.isfinite(self.opt.data[: self.theta_size]).all()):
                bad |= ~np.all(
                    [torch.isfinite(p.reshape(k, -1)).all(1).numpy() for p in self.theta.values()],
                    0,
                )
        self._fail(bad, "non-finite policy parameters")
        for i, value in enumerate(kl.tolist()):
            self.kl[i].append(value if math.isfinite(value) else math.nan)

    def _per_step(self, who: str, loss, state, prep, hist, pi, logp, rows) -> torch.Tensor:
        """Per-step losses (K, B) of ``loss`` (the loss or the guide) at ``rows``; what it
        raises, or a result of another shape, is reported naming it (``who``)."""
        try:
            steps = loss(self.ctx, self.phi, state, hist, pi, logp, rows, prep)
        except Exception as err:  # noqa: BLE001  (whatever the user's loss raises)
            raise blamed(who, "__call__", err) from err
        if not isinstance(steps, torch.Tensor) or steps.shape != rows.shape:
            got = (f"a tensor of shape {tuple(steps.shape)}" if isinstance(steps, torch.Tensor)
                   else f"a {type(steps).__name__}")  # fmt: skip
            raise UserCodeError(
                f"{who} returned {got}; a loss returns one value per step of the minibatch, "
                f"a tensor of shape {tuple(rows.shape)} (inner loops × steps)"
            )
        return steps

    def _reduce(self, steps: torch.Tensor) -> torch.Tensor:
        return steps.sum(1) if self.cfg.reduce == "sum" else steps.mean(1)

    # --- evaluation ---------------------------------------------------------------------
    def _evaluate(self) -> list[list[float]]:
        cfg, k = self.cfg, len(self.envs)
        returns: list[list[float]] = [[] for _ in range(k)]
        self._eval_steps = [0] * k
        obs = np.stack([self._reset(i) for i in range(k)]).astype(np.float64)
        ep_ret, ep_len = np.zeros(k), np.zeros(k, int)
        active = [not f for f in self.failed]
        while any(active):
            noise = (
                None
                if cfg.eval_deterministic
                else np.stack([self.policy.draw_noise(r[_ACT], 1, self.dims)[0] for r in self.rngs])
            )
            _, act, _ = self._act(self.obs_norm(obs), noise)
            env_act = self._env_actions(act)
            for i in range(k):
                if not active[i]:
                    continue
                obs[i], r, done = self._step(i, env_act[i])
                ep_ret[i] += r
                ep_len[i] += 1
                self._eval_steps[i] += 1
                if done or ep_len[i] >= cfg.eval_max_steps:
                    returns[i].append(float(ep_ret[i]))
                    ep_ret[i], ep_len[i] = 0.0, 0
                    obs[i] = self._reset(i)
                    active[i] = len(returns[i]) < cfg.eval_episodes
        return returns

    def _result(self, i: int, returns: list[float], env_steps: int) -> Result:
        from epgkit.method.inner_loop import (
            Result,  # here: epgkit.method.inner_loop imports this module
        )

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
