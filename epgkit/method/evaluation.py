"""The fitness of an inner loop (Algorithm 2's last line): the mean return of a few evaluation
episodes of its final policy, all K inner loops' episodes stepped together."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from epgkit.method.batch_envs import BatchEnvs
from epgkit.method.policies import Actor


def evaluate(
    envs: BatchEnvs,
    act: Actor,
    normalize: Callable[[np.ndarray], np.ndarray],
    noise: Callable[[], np.ndarray] | None,
    failed: list[str | None],
    episodes: int,
    max_steps: int,
) -> tuple[list[list[float]], list[int]]:
    """Runs ``episodes`` episodes per inner loop that has not failed, from fresh resets.

    Args:
        envs: The inner loops' envs.
        act: The policy's action for normalized observations.
        normalize: The observation normalizer, as training left it.
        noise: Draws one step's action noise for every inner loop, or None to act with the
            most likely action.
        failed: Per inner loop, None, or why it failed (then it is not evaluated).
        episodes: Episodes per inner loop.
        max_steps: Cap on an episode's length, for envs without a time limit.

    Returns:
        Each inner loop's episode returns, and its number of evaluation steps.
    """
    k = len(envs.envs)
    returns: list[list[float]] = [[] for _ in range(k)]
    steps = [0] * k
    obs = envs.reset_all()
    ep_ret, ep_len = np.zeros(k), np.zeros(k, int)
    active = [not f for f in failed]
    while any(active):
        _, action, _ = act(normalize(obs), None if noise is None else noise())
        env_act = envs.actions(action)
        for i in range(k):
            if not active[i]:
                continue
            obs[i], r, done = envs.step_one(i, env_act[i])
            ep_ret[i] += r
            ep_len[i] += 1
            steps[i] += 1
            if done or ep_len[i] >= max_steps:
                returns[i].append(float(ep_ret[i]))
                ep_ret[i], ep_len[i] = 0.0, 0
                obs[i] = envs.reset(i)
                active[i] = len(returns[i]) < episodes
    return returns, steps
