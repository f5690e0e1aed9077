"""The paper's rewards (Appendix A) for the Hopper, Walker and HalfCheetah families.

RandomHopper and RandomWalker reward forward velocity, DirectionalHopper and
DirectionalHalfCheetah the velocity signed by the task's direction d, each minus gymnasium
v5's control cost and without its +1 healthy bonus; ``healthy_reward=1.0`` gives the stock
reward back. Termination stays the stock one.
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

import epgkit.envs  # noqa: F401  (registers the epgkit/ ids)

CTRL_COST = {  # env id → gymnasium v5's control cost weight
    "epgkit/RandomHopper-v0": 1e-3,
    "epgkit/RandomWalker-v0": 1e-3,
    "epgkit/DirectionalHopper-v0": 1e-3,
    "epgkit/DirectionalHalfCheetah-v0": 0.1,
}
WITH_BONUS = [i for i in CTRL_COST if "Cheetah" not in i]  # HalfCheetah-v5 has no bonus


def steps(env: gym.Env, actions: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Rewards and infos of an episode under open-loop actions (stops at its end)."""
    env.reset(seed=0)
    rewards, infos = [], []
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return np.array(rewards), infos


@pytest.mark.parametrize("task_seed", [0, 1])  # the two directions of the directional ones
@pytest.mark.parametrize("env_id", CTRL_COST)
def test_reward_is_signed_forward_velocity_minus_control_cost(env_id, task_seed):
    env = gym.make(env_id, task_seed=task_seed)
    d = getattr(env.unwrapped, "direction", 1)
    shape = env.action_space.shape
    actions = np.random.default_rng(task_seed).uniform(-1, 1, (80, *shape))
    rewards, infos = steps(env, actions)
    velocity = np.array([i["x_velocity"] for i in infos])
    ctrl = CTRL_COST[env_id] * np.square(actions[: len(rewards)]).sum(axis=1)
    assert np.abs(velocity).max() > 0.1  # the robot moved, so the velocity term was compared
    np.testing.assert_allclose(rewards, d * velocity - ctrl, rtol=1e-12, atol=1e-12)
    assert all(i.get("reward_survive", 0.0) == 0.0 for i in infos)


@pytest.mark.parametrize("env_id", CTRL_COST)
def test_standing_still_earns_about_nothing(env_id):
    # With gymnasium's bonus a still robot earns +1 a step; with the paper's reward ≈ 0.
    env = gym.make(env_id, task_seed=2)
    rewards, _ = steps(env, np.zeros((20, *env.action_space.shape)))
    assert len(rewards) == 20
    assert abs(rewards.mean()) < 0.05 and np.abs(rewards).max() < 0.25


@pytest.mark.parametrize("env_id", WITH_BONUS)
def test_the_stock_option_adds_one_per_healthy_step(env_id):
    paper = gym.make(env_id, task_seed=2)
    stock = gym.make(env_id, task_seed=2, healthy_reward=1.0)
    # The option survives pickling (a Dask worker rebuilds the env from its arguments).
    stock = pickle.loads(pickle.dumps(stock))
    actions = np.zeros((20, *paper.action_space.shape))
    (paper_rewards, _), (stock_rewards, infos) = steps(paper, actions), steps(stock, actions)
    assert [i["reward_survive"] for i in infos] == [1.0] * 20  # healthy all along
    np.testing.assert_allclose(stock_rewards - paper_rewards, np.ones(20), rtol=0, atol=1e-12)
