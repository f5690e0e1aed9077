"""K envs stepped together, one per inner loop, into preallocated arrays.

Speed (benchmarks/inner_loop.py): a Hopper step costs ~60 µs of MuJoCo physics, so the loop
around it must cost little. Envs whose only wrappers are gymnasium's time limit and order
check are stepped through their unwrapped core with the time limit counted here (the same
results, without the wrapper calls); the step of all K is one tight loop that writes each
observation and reward into one array, so that one finiteness check covers them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from epgkit.envs import task_of
from epgkit.method.alive import Alive
from epgkit.method.dims import Dims
from epgkit.method.user_code import UserCodeError, blame, blamed

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


class BatchEnvs:
    """K envs, the time limits counted here, and the training episodes' returns.

    Args:
        envs: One env per inner loop, all of one family.
        name: Who is named when an env raises, e.g. ``env 'epgkit/RandomHopper-v0'``.
    """

    def __init__(self, envs: Sequence[gym.Env], name: str) -> None:
        self.envs, self.name, k = list(envs), name, len(envs)
        self.cores, self.limits = zip(*(_core(env) for env in self.envs), strict=True)
        self.elapsed = [0] * k  # steps since reset, for the time limits counted here
        self.dims = d = Dims.of(self.envs[0])
        self.low = np.array(d.act_low, np.float32) if not d.discrete else None
        self.high = np.array(d.act_high, np.float32) if not d.discrete else None
        #: Per inner loop, (env step at which it ended, return) of every training episode.
        self.episodes: list[list[tuple[int, float]]] = [[] for _ in range(k)]
        # Per-step scratch, reused every step: the next observations with the reward beside
        # them (one finiteness check covers both), the done flags, the running returns.
        self.out = np.zeros((k, d.obs_dim + 1))
        self.done = np.zeros(k, np.float32)
        self.ret = np.zeros(k)

    def actions(self, act: np.ndarray) -> Any:
        """What the envs are given for the policy's actions (K, ...): indices (Discrete), or
        the actions clipped to the bounds (Box)."""
        if self.dims.discrete:
            return act[:, 0].astype(int).tolist()
        return np.minimum(np.maximum(act, self.low), self.high)  # np.clip, without its overhead

    def reset(self, i: int, seed: int | None = None) -> np.ndarray:
        """Resets env i; a seeded reset goes through the wrappers, so that they start counting."""
        self.elapsed[i] = 0
        try:
            env = self.envs[i] if seed is not None else self.cores[i]
            obs = env.reset(seed=seed)[0]
        except Exception as err:  # noqa: BLE001  (whatever the user's env raises)
            raise blamed(self.name, "reset", err) from err
        # Checked here, not in step's hot loop: there a wrong size fails the row assignment.
        if np.shape(obs) != (self.dims.obs_dim,):
            raise UserCodeError(
                f"{self.name} failed in reset: it returned an observation of shape "
                f"{np.shape(obs)}, its observation_space says ({self.dims.obs_dim},)"
            )
        return obs

    def reset_all(self, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Resets every env (seeded if ``seeds``); the first observations, (K, obs_dim)."""
        seeds = seeds if seeds is not None else [None] * len(self.envs)
        return np.stack([self.reset(i, s) for i, s in enumerate(seeds)]).astype(np.float64)

    def step(self, act: np.ndarray, obs: np.ndarray, t: int, alive: Alive) -> np.ndarray:
        """Steps the live envs with actions ``act``: writes the next observations into ``obs``
        (an env whose episode ended is reset there), the done flags into ``self.done``, and
        returns the rewards (K,). An env whose observation or reward is not finite stops its
        inner loop; its reward counts as 0 from then on and its observation stays."""
        env_act, out, done = self.actions(act), self.out, self.done
        cores, limits, elapsed = self.cores, self.limits, self.elapsed
        ended, o, n = [], None, self.dims.obs_dim
        try:  # costs nothing unless the env raises
            for i in alive.indices:  # the hot loop: one env step each, nothing else
                o, r, term, trunc, _ = cores[i].step(env_act[i])
                elapsed[i] += 1
                out[i, :-1], out[i, -1] = o, r
                if term or trunc or elapsed[i] == limits[i]:
                    ended.append(i)
            # A (1,) observation broadcasts into its row silently; the envs are one class, so
            # the last one's size, checked once a step rather than per env, finds it.
            if o is not None and len(o) != n:
                raise ValueError("wrong observation size")
        except Exception as err:  # noqa: BLE001  (whatever the user's env raises or returns)
            if o is not None and np.shape(o) != (self.dims.obs_dim,):  # the row did not take it
                raise UserCodeError(
                    f"{self.name} failed in step: it returned an observation of shape "
                    f"{np.shape(o)}, its observation_space says ({self.dims.obs_dim},)"
                ) from err
            raise blamed(self.name, "step", err) from err
        if not math.isfinite(out.sum()):  # physics failure: stops that inner loop only
            bad = ~np.isfinite(out).all(1)
            for i in [i for i in alive.indices if bad[i]]:
                out[i] = 0.0  # its buffer rows stay finite
                out[i, :-1] = obs[i]
            alive.stop(bad, f"non-finite observation or reward at step {t}")
            ended = [i for i in ended if not bad[i]]
        obs[:] = out[:, :-1]
        reward = out[:, -1]
        self.ret += reward
        done[:] = 0.0
        for i in ended:
            done[i] = 1.0
            self.episodes[i].append((t, float(self.ret[i])))
            self.ret[i] = 0.0
            obs[i] = self.reset(i)
        return reward

    def step_one(self, i: int, action: Any) -> tuple[np.ndarray, float, bool]:
        """Steps env i alone (evaluation); returns the observation, reward and whether the
        episode ended (terminated, truncated or at the time limit counted here)."""
        try:
            o, r, term, trunc, _ = self.cores[i].step(action)
        except Exception as err:  # noqa: BLE001  (whatever the user's env raises)
            raise blamed(self.name, "step", err) from err
        self.elapsed[i] += 1
        return o, r, bool(term or trunc or self.elapsed[i] == self.limits[i])

    def task_signals(self, out: np.ndarray) -> None:
        """Writes each env's privileged task signal into ``out`` (K, signal_dim)."""
        with blame(self.name, "task_signal"):
            for i, core in enumerate(self.cores):
                out[i] = core.unwrapped.task_signal()

    def close(self) -> list[dict[str, Any]]:
        """Closes every env; returns their tasks."""
        tasks = [task_of(env) for env in self.envs]
        for env in self.envs:
            env.close()
        return tasks
