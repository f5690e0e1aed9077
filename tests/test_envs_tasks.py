"""Tests of the goal- and direction-randomized families: directional, GoalAnt and Fetch.

Each test checks one claim the module docstrings make: what the reward is, what the policy
cannot see, where the targets lie, when episodes end, and the MuJoCo pin that Fetch needs.
"""

from __future__ import annotations

import json
import math
import pickle

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import epgkit.envs  # noqa: F401  (registers the epgkit/ ids)
from epgkit.envs.directional import draw_direction
from epgkit.envs.goalant import draw_goal

IDS = [
    "epgkit/DirectionalHopper-v0",
    "epgkit/DirectionalHalfCheetah-v0",
    "epgkit/GoalAnt-v0",
    "epgkit/GoalAntPosX-v0",
    "epgkit/GoalAntNegX-v0",
    "epgkit/GoalAntNoReset-v0",
    "epgkit/Fetch-v0",
]


def rollout(
    env: gym.Env, actions: np.ndarray, reset_seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Observations, rewards and infos of one open-loop episode (stops at the first end)."""
    obs, _ = env.reset(seed=reset_seed)
    observations, rewards, infos = [obs], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), infos


def random_actions(env: gym.Env, n: int, seed: int = 0) -> np.ndarray:
    space = env.action_space
    return np.random.default_rng(seed).uniform(space.low, space.high, (n, *space.shape))


# ---- every family: registration, check_env, task-seed determinism ----


@pytest.mark.filterwarnings("ignore:.*Box observation space m")  # unbounded, as in gymnasium
@pytest.mark.parametrize("env_id", IDS)
def test_family_contract(env_id: str) -> None:
    env = gym.make(env_id, task_seed=5)
    base = env.unwrapped
    check_env(base, skip_render_check=True)  # "human" rendering needs a display
    assert json.loads(json.dumps(base.task))["task_seed"] == 5
    assert base.task_signal().shape == (base.task_signal_dim,)

    actions = random_actions(env, 30)
    obs_a, rew_a, _ = rollout(gym.make(env_id, task_seed=5), actions)
    obs_b, rew_b, _ = rollout(gym.make(env_id, task_seed=5), actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert gym.make(env_id, task_seed=5).unwrapped.task == base.task
    assert pickle.loads(pickle.dumps(env)).unwrapped.task == base.task


# ---- DirectionalHopper / DirectionalHalfCheetah ----


def test_seeds_zero_and_one_draw_opposite_directions() -> None:
    # Registry-wide tests compare task seeds 0 and 1; a binary family must differ there.
    assert {draw_direction(0), draw_direction(1)} == {-1, 1}
    directions = [draw_direction(s) for s in range(400)]
    assert 0.4 < directions.count(1) / 400 < 0.6


@pytest.mark.parametrize(
    "env_id", ["epgkit/DirectionalHopper-v0", "epgkit/DirectionalHalfCheetah-v0"]
)
def test_direction_flips_the_velocity_reward_only(env_id: str) -> None:
    forward = gym.make(env_id, task_seed=0)
    backward = gym.make(env_id, task_seed=1)
    assert (forward.unwrapped.direction, backward.unwrapped.direction) == (1, -1)
    actions = random_actions(forward, 60, seed=1)
    obs_f, rew_f, info_f = rollout(forward, actions)
    obs_b, rew_b, info_b = rollout(backward, actions)
    # The policy cannot tell the tasks apart: same observations under the same actions.
    np.testing.assert_array_equal(obs_f, obs_b)
    v = np.array([i["x_velocity"] for i in info_f])
    assert np.abs(v).max() > 0.1
    np.testing.assert_allclose([i["reward_forward"] for i in info_f], v)
    np.testing.assert_allclose([i["reward_forward"] for i in info_b], -v)
    # Everything else (the control cost) is the same: rewards differ by 2 v.
    np.testing.assert_allclose(rew_f - rew_b, 2 * v)


# ---- GoalAnt ----


def test_goal_ranges_axes_and_half_planes() -> None:
    for sign in (-1, 0, 1):
        goals = np.array(
            [draw_goal(s, goal_x_sign=sign, goal_layout="half-plane")["goal"] for s in range(2000)]
        )
        radii = np.linalg.norm(goals, axis=1)
        assert radii.min() >= 2.0 and radii.max() <= 5.0
        if sign:
            assert (np.sign(goals[:, 0]) == sign).all()
        else:
            assert (goals[:, 0] > 0).mean() == pytest.approx(0.5, abs=0.05)
        assert (goals[:, 1] > 0).mean() == pytest.approx(0.5, abs=0.05)
    # Figure 18: meta-training targets on the positive x-axis, test targets on the negative.
    for sign in (-1, 1):
        tasks = [draw_goal(s, goal_x_sign=sign) for s in range(200)]
        goals = np.array([t["goal"] for t in tasks])
        assert (goals[:, 1] == 0).all() and (np.sign(goals[:, 0]) == sign).all()
        assert np.abs(goals[:, 0]).min() >= 2.0 and np.abs(goals[:, 0]).max() <= 5.0
        assert np.unique(goals[:, 0]).size == 200  # the distance still varies per task
        np.testing.assert_allclose([t["goal_angle"] for t in tasks], 0 if sign > 0 else np.pi)
    for env_id, sign in (("epgkit/GoalAntPosX-v0", 1), ("epgkit/GoalAntNegX-v0", -1)):
        for seed in range(10):
            goal = gym.make(env_id, task_seed=seed).unwrapped.goal
            assert np.sign(goal[0]) == sign and goal[1] == 0
        half = gym.make(env_id, task_seed=0, goal_layout="half-plane").unwrapped.goal
        assert np.sign(half[0]) == sign and half[1] != 0
    with pytest.raises(ValueError, match="goal_layout"):
        draw_goal(0, goal_x_sign=1, goal_layout="quadrant")
    with pytest.raises(ValueError, match="goal_x_sign"):
        draw_goal(0, goal_x_sign=2)


def test_goal_is_not_in_the_observation() -> None:
    env_a = gym.make("epgkit/GoalAnt-v0", task_seed=0)
    env_b = gym.make("epgkit/GoalAnt-v0", task_seed=1)
    assert env_a.unwrapped.goal.tolist() != env_b.unwrapped.goal.tolist()
    actions = random_actions(env_a, 100, seed=2)
    obs_a, rew_a, info_a = rollout(env_a, actions, reset_seed=7)
    obs_b, rew_b, _ = rollout(env_b, actions, reset_seed=7)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.allclose(rew_a, rew_b)
    # Ant-v5's default observation: no torso x, y.
    assert obs_a.shape[1] == 105
    assert not np.isclose(obs_a[-1], info_a[-1]["x_position"]).any()
    np.testing.assert_allclose(env_a.unwrapped.task_signal(), env_a.unwrapped.goal, rtol=1e-6)


def test_reward_is_velocity_toward_the_goal() -> None:
    env = gym.make("epgkit/GoalAnt-v0", task_seed=3)
    base = env.unwrapped
    unit = base.goal / np.linalg.norm(base.goal)
    zero = np.zeros(env.action_space.shape)
    parts = ("reward_goal", "reward_ctrl", "reward_contact", "reward_survive")
    for sign in (1.0, -1.0):
        env.reset(seed=0)
        qvel = base.data.qvel.copy()
        qvel[:2] = sign * 1.5 * unit  # the torso slides toward (or away from) the goal
        base.set_state(base.data.qpos.copy(), qvel)
        _, reward, _, _, info = env.step(zero)
        velocity = np.array([info["x_velocity"], info["y_velocity"]])
        # Up to O(dt) the goal term is the projection of the velocity on the unit vector.
        assert info["reward_goal"] == pytest.approx(velocity @ unit, rel=0.05)
        assert np.sign(info["reward_goal"]) == sign and abs(info["reward_goal"]) > 0.5
        assert reward == pytest.approx(sum(info[k] for k in parts))


def test_goal_reward_sums_to_distance_gained() -> None:
    # The goal terms telescope, so jittering across the target earns nothing.
    env = gym.make("epgkit/GoalAnt-v0", task_seed=6)
    base = env.unwrapped
    env.reset(seed=1)
    d0 = np.linalg.norm(base.data.xpos[1, :2] - base.goal)
    _, _, infos = rollout(env, random_actions(env, 200, seed=4), reset_seed=1)
    gained = sum(i["reward_goal"] for i in infos) * base.dt
    assert gained == pytest.approx(d0 - infos[-1]["distance_to_goal"], abs=1e-9)


def test_initial_yaw_is_random_per_reset() -> None:
    env = gym.make("epgkit/GoalAnt-v0")
    yaws = []
    for seed in range(40):
        env.reset(seed=seed)
        w, _, _, z = env.unwrapped.data.qpos[3:7]
        yaws.append(2 * math.atan2(z, w))
    yaws = np.angle(np.exp(1j * np.array(yaws)))  # wrap to (-pi, pi]
    assert np.std(yaws) > 1.0 and (yaws > 0).any() and (yaws < 0).any()


def test_no_reset_ends_only_at_the_goal() -> None:
    assert gym.spec("epgkit/GoalAntNoReset-v0").max_episode_steps is None
    env = gym.make("epgkit/GoalAntNoReset-v0", task_seed=4)
    base = env.unwrapped
    # Far from the goal: no time limit, and no termination even when unhealthy (torso too high).
    _, _, infos = rollout(env, random_actions(env, 1100, seed=3))
    assert len(infos) == 1100 and not any(i["is_success"] for i in infos)
    qpos = base.data.qpos.copy()
    qpos[2] = 1.5
    base.set_state(qpos, base.data.qvel.copy())
    _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert info["reward_survive"] == 0 and not terminated and not truncated
    # At the goal: the episode ends.
    qpos = base.data.qpos.copy()
    qpos[:2] = base.goal
    base.set_state(qpos, np.zeros(base.model.nv))
    _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert terminated and not truncated and info["is_success"]
    # The ordinary variant keeps going at the goal (it ends on falling over or time limit).
    plain = gym.make("epgkit/GoalAnt-v0", task_seed=4)
    plain.reset(seed=0)
    qpos = plain.unwrapped.data.qpos.copy()
    qpos[:2] = plain.unwrapped.goal
    plain.unwrapped.set_state(qpos, np.zeros(plain.unwrapped.model.nv))
    _, _, terminated, _, info = plain.step(np.zeros(plain.action_space.shape))
    assert info["is_success"] and not terminated
    qpos[2] = 1.5
    plain.unwrapped.set_state(qpos, np.zeros(plain.unwrapped.model.nv))
    _, _, terminated, _, _ = plain.step(np.zeros(plain.action_space.shape))
    assert terminated


# ---- Fetch ----


def test_mujoco_is_pinned_below_3_12() -> None:
    major, minor = (int(p) for p in mujoco.__version__.split(".")[:2])
    assert (major, minor) < (3, 12), (
        f"mujoco {mujoco.__version__}: gymnasium-robotics 1.4.2's Fetch joint helpers fail an "
        "assertion with mujoco >= 3.12 (mjtJoint no longer equals NumPy ints); keep the "
        "`mujoco<3.12` pin in pyproject.toml or patch those helpers, deliberately."
    )


def test_fetch_target_is_fixed_per_task_and_hidden() -> None:
    env = gym.make("epgkit/Fetch-v0", task_seed=2, signal="absolute")
    base = env.unwrapped
    target = base.target.copy()
    np.testing.assert_allclose(base.task_signal(), target, rtol=1e-6)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(base._robot.goal, target)
    np.testing.assert_array_equal(gym.make("epgkit/Fetch-v0", task_seed=2).unwrapped.target, target)
    assert not np.allclose(gym.make("epgkit/Fetch-v0", task_seed=3).unwrapped.target, target)
    assert obs.shape == (10,) and not np.isin(np.round(target, 6), np.round(obs, 6)).any()
    offsets = np.array(base.task["target_offset"])
    assert (np.abs(offsets) <= 0.15).all()


def test_fetch_reaches_the_target_by_moving_toward_it() -> None:
    env = gym.make("epgkit/Fetch-v0", task_seed=1)
    target = env.unwrapped.target
    obs, _ = env.reset(seed=0)
    distances = [np.linalg.norm(obs[:3] - target)]  # obs[:3] is the achieved goal (gripper xyz)
    for _ in range(25):
        # An action of 1 moves the gripper's mocap target 5 cm.
        move = np.clip((target - obs[:3]) / 0.05, -1.0, 1.0)
        obs, reward, terminated, truncated, info = env.step(np.append(move, 0.0))
        distances.append(np.linalg.norm(obs[:3] - target))
        assert reward == pytest.approx(-distances[-1])
        assert not terminated and not truncated
    assert distances[0] > 0.05
    assert distances[5] < distances[0]
    assert distances[-1] < 0.02 and info["is_success"]


def test_fetch_observation_is_the_stock_one() -> None:
    # The lean observation reads the finger joints by address instead of by name: same arrays.
    from epgkit.envs.fetch import MujocoFetchReachEnv, _LeanFetchReach

    stock, lean = (cls(reward_type="dense") for cls in (MujocoFetchReachEnv, _LeanFetchReach))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(120, 4))
    for start in (0, 60):
        a, _ = stock.reset(seed=start)
        b, _ = lean.reset(seed=start)
        for action in actions[start : start + 60]:
            np.testing.assert_array_equal(a["observation"], b["observation"])
            a, ra, *_ = stock.step(action)
            b, rb, *_ = lean.step(action)
            assert ra == rb
        assert np.abs(a["observation"][-2:]).max() > 0  # the fingers moved: non-zeros compared


def test_fetch_relative_signal_is_the_target_seen_from_the_gripper_now() -> None:
    env = gym.make("epgkit/Fetch-v0", task_seed=4)
    base = env.unwrapped
    obs, _ = env.reset(seed=0)
    signals = []
    for _ in range(3):
        signal = base.task_signal()
        np.testing.assert_allclose(signal * 0.15, base.target - obs[:3], rtol=1e-5, atol=1e-6)
        signals.append(signal)
        obs, *_ = env.step(np.array([1.0, 0.0, 0.0, 0.0]))
    assert signals[2][0] < signals[1][0] < signals[0][0]  # the gripper moved +x toward it
    with pytest.raises(ValueError, match="relative"):
        gym.make("epgkit/Fetch-v0", signal="goal")
