"""The rendered GIF keeps the body in the picture however far it goes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import epgkit.envs  # noqa: F401  (registers the task families)
from epgkit.tools.envshow import mujoco_gl_problem
from epgkit.tools.render import follow


@contextmanager
def rendering(env_id: str) -> Iterator[gym.Env]:
    """The env, reset, rendering rgb_array frames (skipped where MuJoCo cannot render)."""
    if (problem := mujoco_gl_problem()) is not None:
        pytest.skip(problem)
    env = gym.make(env_id, render_mode="rgb_array", disable_env_checker=True)
    env.reset(seed=0)
    try:
        yield env
    finally:
        env.close()


def _body_pixels(frame: np.ndarray) -> int:
    """Pixels of the hopper's orange-brown capsules (the floor is black, white and grey-green,
    the sky blue-grey)."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((r > 120) & (r - b > 60) & (r - g > 30)).sum())


@pytest.mark.parametrize(
    "env_id",
    ["epgkit/RandomHopper-v0", "epgkit/RandomWalker-v0", "epgkit/DirectionalHalfCheetah-v0",
     "epgkit/GoalAnt-v0"],
)  # fmt: skip
def test_the_camera_follows_a_body_that_has_gone_two_metres(env_id):
    with rendering(env_id) as env:
        at_start = _body_pixels(env.render())
        base = env.unwrapped
        base.data.qpos[0] += 2.0  # two metres forward, as a run would take it
        mujoco.mj_forward(base.model, base.data)
        unfollowed = _body_pixels(env.render())
        follow(env)
        followed = _body_pixels(env.render())
    assert at_start > 500
    assert unfollowed < at_start / 2  # the free camera has lost most of it
    assert followed > 0.8 * at_start


@pytest.mark.parametrize("env_id", ["epgkit/RandomReacher-v0", "epgkit/Fetch-v0"])
def test_a_scene_with_a_view_of_its_own_keeps_it(env_id):
    with rendering(env_id) as env:
        before = env.render()
        follow(env)
        after = env.render()
    assert np.array_equal(before, after)
