"""The lean Hopper/Walker ``step`` gives exactly what gymnasium's stock ``step`` gives."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from epgkit.envs.directional import DirectionalHopper
from epgkit.envs.lean_step import LeanWalkerStep
from epgkit.envs.mujoco_random import RandomHopper, RandomWalker

FAMILIES = [(RandomHopper, HopperEnv), (RandomWalker, Walker2dEnv), (DirectionalHopper, HopperEnv)]


@pytest.mark.parametrize("healthy_reward", [0.0, 1.0], ids=["paper", "stock"])
@pytest.mark.parametrize(("family", "stock"), FAMILIES, ids=lambda c: c.__name__)
def test_lean_step_is_bit_identical_to_the_stock_step(family, stock, healthy_reward):
    # Twins of one task and reward: one steps through the lean step, the other through the
    # stock one.
    lean = family(task_seed=7, healthy_reward=healthy_reward)
    twin = family(task_seed=7, healthy_reward=healthy_reward)
    assert isinstance(lean, LeanWalkerStep)
    lean.reset(seed=0)
    twin.reset(seed=0)
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(1500):
        # Bursts of oversized actions make the robot fall, so terminations are compared too.
        scale = 4.0 if t % 300 < 40 else 1.0
        action = (scale * rng.uniform(-1, 1, lean.action_space.shape)).astype(np.float32)
        got = lean.step(action)
        want = stock.step(twin, action)
        assert np.array_equal(got[0], want[0]) and got[0].dtype == want[0].dtype
        assert got[1:4] == want[1:4]
        assert got[4] == want[4]
        if got[2] or t % 400 == 399:
            lean.reset()
            twin.reset()
            ends += got[2]
    assert ends >= 3  # terminations did happen, so the unhealthy branch was compared


def test_lean_hopper_step_ends_the_episode_when_a_state_leaves_its_range():
    lean, twin = RandomHopper(task_seed=4), RandomHopper(task_seed=4)
    for env in (lean, twin):
        env.reset(seed=0)
        qvel = env.data.qvel.copy()
        qvel[5] = 150.0  # the foot joint spinning out of the healthy state range (±100)
        env.set_state(env.data.qpos.copy(), qvel)
    got, want = lean.step(np.zeros(3)), HopperEnv.step(twin, np.zeros(3))
    z, angle = lean.data.qpos[1:3]
    assert z > 0.7 and abs(angle) < 0.2  # upright: only the state range ends the episode
    assert got[2] is want[2] is True
    assert got[1] == want[1] and got[4] == want[4]


def test_lean_step_takes_lists_and_refuses_a_wrong_action_shape():
    lean, twin = RandomHopper(task_seed=1), RandomHopper(task_seed=1)
    lean.reset(seed=2)
    twin.reset(seed=2)
    got, want = lean.step([0.3, -0.2, 0.9]), HopperEnv.step(twin, [0.3, -0.2, 0.9])
    assert np.array_equal(got[0], want[0]) and got[1] == want[1]
    with pytest.raises(ValueError, match="Action dimension mismatch"):
        lean.step(np.zeros(2))


@pytest.mark.parametrize(
    "env_id", ["epgkit/RandomHopper-v0", "epgkit/RandomWalker-v0", "epgkit/DirectionalHopper-v0"]
)
def test_stock_reward_arguments_pass_through_and_survive_pickling(env_id):
    # The paper's reward is the default; healthy_reward = 1 gives back gymnasium's stock bonus.
    env = gym.make(env_id, task_seed=3, healthy_reward=1.0)
    base, twin = env.unwrapped, pickle.loads(pickle.dumps(env.unwrapped))
    env.reset(seed=0)
    twin.reset(seed=0)
    action = np.full(env.action_space.shape, 0.5, np.float32)
    (_, reward, *_, info), (_, twin_reward, *_) = env.step(action), twin.step(action)
    assert base._healthy_reward == twin._healthy_reward == 1.0 and info["reward_survive"] == 1.0
    assert reward == twin_reward == info["reward_forward"] + 1.0 + info["reward_ctrl"]
    assert twin.task == base.task
