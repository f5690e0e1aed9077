"""Tests of every registered task family, plus the physics of the randomized MuJoCo families.

The first block is parametrized over ``epgkit.envs.registered()``: a family registered later is
covered without editing this file. The rest checks that RandomHopper, RandomWalker and
RandomReacher randomize what Appendix A says, the way SPEC §2 says (shape through MjSpec).
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.utils.env_checker import check_env

import epgkit.envs
from epgkit.envs.base import TaskFamily
from epgkit.envs.ids import takes_task_seed
from epgkit.envs.mujoco_random import RandomHopper, RandomReacher, RandomWalker
from epgkit.tools.envshow import show_tasks

ENV_IDS = epgkit.envs.registered()
N_STEPS = 20  # enough for any task difference to show, short enough for ~10 families


def rollout(env_id: str, task_seed: int, n_steps: int = N_STEPS) -> np.ndarray:
    """Flattened observations and rewards under fixed actions and a fixed reset seed."""
    env = gym.make(env_id, task_seed=task_seed)
    obs, _ = env.reset(seed=123)
    env.action_space.seed(7)
    out = [gym.spaces.flatten(env.observation_space, obs)]
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out += [gym.spaces.flatten(env.observation_space, obs), np.array([reward])]
        if terminated or truncated:
            break
    env.close()
    return np.concatenate(out).astype(np.float64)


# ---- every registered family ------------------------------------------------------------------


def test_some_families_are_registered() -> None:
    assert {"epgkit/PointGoal-v0", "epgkit/RandomHopper-v0"} <= set(ENV_IDS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id, task_seed=1)
    assert isinstance(env.unwrapped, TaskFamily)
    with warnings.catch_warnings():
        # Unbounded observations are normal for these envs, not a defect.
        warnings.filterwarnings("ignore", message=r".*Box observation space m\w+ value is")
        # The render check would open a "human" window (GLFW), which aborts headless.
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_task_seed_same_task_and_trajectory(env_id: str) -> None:
    assert epgkit.envs.task_of(gym.make(env_id, task_seed=5)) == epgkit.envs.task_of(
        gym.make(env_id, task_seed=5)
    )
    np.testing.assert_array_equal(rollout(env_id, 5), rollout(env_id, 5))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_different_tasks_behave_differently(env_id: str) -> None:
    # Seeds can give the same task (a forward/backward family has two), so compare only
    # seeds whose task parameters differ, and ask that some do.
    tasks, runs = {}, {}
    for seed in range(6):
        task = epgkit.envs.task_of(gym.make(env_id, task_seed=seed))
        key = json.dumps({k: v for k, v in task.items() if k != "task_seed"}, sort_keys=True)
        if key not in tasks:
            tasks[key], runs[key] = seed, rollout(env_id, seed)
    assert len(runs) >= 2, f"task seeds 0..5 of {env_id} all give the same task"
    first, *others = runs.values()
    for other in others:
        assert first.shape != other.shape or not np.array_equal(first, other)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_task_is_json_and_pickles(env_id: str) -> None:
    env = gym.make(env_id, task_seed=11)
    task = epgkit.envs.task_of(env)
    assert task["task_seed"] == 11
    assert json.loads(json.dumps(task)) == task
    assert pickle.loads(pickle.dumps(env.unwrapped)).task == task


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_task_signal_shape(env_id: str) -> None:
    env = gym.make(env_id, task_seed=2)
    base = env.unwrapped
    env.reset(seed=0)
    assert base.task_signal().shape == (base.task_signal_dim,)
    env.step(env.action_space.sample())
    assert base.task_signal().shape == (base.task_signal_dim,)
    assert epgkit.envs.loss_view(env) == (base.reward_in_loss, base.task_signal_dim)


# ---- RandomHopper / RandomWalker --------------------------------------------------------------

PHYSICS = [(RandomHopper, HopperEnv), (RandomWalker, Walker2dEnv)]
FIXED = (1.0, 1.0)


@pytest.mark.parametrize(("family", "stock"), PHYSICS)
def test_nominal_task_is_the_stock_env(family: type, stock: type) -> None:
    ours = family(
        gravity_range=(9.81, 9.81), friction_range=FIXED, mass_range=FIXED, thickness_range=FIXED
    )
    theirs = stock()
    np.testing.assert_allclose(ours.model.body_mass, theirs.model.body_mass)
    np.testing.assert_array_equal(ours.init_qpos, theirs.init_qpos)  # mj_setConst kept qpos0
    assert ours.observation_space == theirs.observation_space
    assert ours.action_space == theirs.action_space
    rng = np.random.default_rng(0)
    ours.reset(seed=3)
    theirs.reset(seed=3)
    for _ in range(10):
        action = rng.uniform(-1, 1, theirs.action_space.shape)
        np.testing.assert_array_equal(ours.step(action)[0], theirs.step(action)[0])


@pytest.mark.parametrize(("family", "stock"), PHYSICS)
def test_thicker_capsules_are_heavier(family: type, stock: type) -> None:
    nominal = stock().model
    for seed in range(4):
        env = family(task_seed=seed, mass_range=FIXED)
        for geom, scale in env.task["capsule_radius_scale"].items():
            body = env.model.geom(geom).bodyid[0]
            # A capsule's volume grows with its radius, so the body's mass does too.
            ratio = env.model.body_mass[body] / nominal.body_mass[body]
            assert (ratio > 1) == (scale > 1), (geom, scale, ratio)
            assert np.all(
                (env.model.body_inertia[body] > nominal.body_inertia[body]) == (scale > 1)
            )
            assert env.model.geom_size[env.model.geom(geom).id, 0] == pytest.approx(
                scale * nominal.geom_size[nominal.geom(geom).id, 0]
            )


@pytest.mark.parametrize(("family", "stock"), PHYSICS)
def test_mass_factor_scales_mass_and_inertia(family: type, stock: type) -> None:
    thick_only = family(task_seed=9, mass_range=FIXED)
    env = family(task_seed=9)
    # The same draws: the mass factor is applied on top of the mass the thickness gives.
    assert env.task["capsule_radius_scale"] == thick_only.task["capsule_radius_scale"]
    for name, scale in env.task["body_mass_scale"].items():
        body = env.model.body(name).id
        assert env.model.body_mass[body] == pytest.approx(scale * thick_only.model.body_mass[body])
        np.testing.assert_allclose(
            env.model.body_inertia[body], scale * thick_only.model.body_inertia[body]
        )
    # mj_setConst ran: derived constants follow the new masses.
    assert env.model.body_subtreemass[0] == pytest.approx(env.model.body_mass.sum())


@pytest.mark.parametrize(("family", "stock"), PHYSICS)
def test_gravity_and_friction_within_range(family: type, stock: type) -> None:
    nominal = stock().model
    gravities = []
    for seed in range(10):
        env = family(task_seed=seed)
        gravities.append(env.task["gravity_z"])
        assert -20.0 <= env.task["gravity_z"] <= -2.0
        np.testing.assert_array_equal(env.model.opt.gravity, [0, 0, env.task["gravity_z"]])
        assert 0.5 <= env.task["friction_scale"] <= 2.0
        np.testing.assert_allclose(
            env.model.geom_friction, env.task["friction_scale"] * nominal.geom_friction
        )
        factors = [
            *env.task["body_mass_scale"].values(),
            *env.task["capsule_radius_scale"].values(),
        ]
        assert all(0.5 <= f <= 2.0 for f in factors)
    assert len(set(gravities)) == len(gravities)


def test_bad_range_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="gravity_range"):
        RandomHopper(gravity_range=(20.0, 2.0))


# ---- RandomReacher ----------------------------------------------------------------------------


def fingertip(env: RandomReacher, arm_qpos: tuple[float, float]) -> np.ndarray:
    qpos = env.data.qpos.copy()
    qpos[:2] = arm_qpos
    env.set_state(qpos, np.zeros(env.model.nv))
    return env.data.body("fingertip").xpos[:2].copy()


def test_reacher_link_lengths_change_the_reach() -> None:
    reaches = []
    for seed in range(4):
        env = RandomReacher(task_seed=seed)
        env.reset(seed=0)
        upper, lower = env.task["link_lengths"]
        assert all(0.05 <= length <= 0.15 for length in (upper, lower))
        stretched = fingertip(env, (0.0, 0.0))
        assert stretched == pytest.approx([upper + lower + 0.01, 0.0])
        reaches.append(stretched[0])
    assert len(set(reaches)) == len(reaches)


def test_reacher_target_is_observed_and_reachable() -> None:
    for seed in range(6):
        env = RandomReacher(task_seed=seed)
        upper, lower = env.task["link_lengths"]
        fore = lower + 0.01
        for reset_seed in range(5):
            obs, _ = env.reset(seed=reset_seed)
            goal = env.data.qpos[2:4].copy()
            np.testing.assert_array_equal(obs[4:6], goal)  # target in the observation
            # Solve the arm's inverse kinematics and check the fingertip lands on the goal.
            d = float(np.linalg.norm(goal))
            elbow = math.acos((d**2 - upper**2 - fore**2) / (2 * upper * fore))
            assert elbow <= 3.0  # within joint1's range
            shoulder = math.atan2(goal[1], goal[0]) - math.atan2(
                fore * math.sin(elbow), upper + fore * math.cos(elbow)
            )
            np.testing.assert_allclose(fingertip(env, (shoulder, elbow)), goal, atol=1e-9)


def test_reacher_masses_follow_lengths() -> None:
    short, long = (RandomReacher(length_range=(s, s)).model for s in (0.5, 1.5))
    for body in ("body0", "body1"):
        assert long.body(body).mass[0] > short.body(body).mass[0]


# ---- envshow ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["epgkit/PointGoal-v0", "epgkit/RandomHopper-v0"])
def test_show_tasks(env_id: str, tmp_path: Path) -> None:
    out = tmp_path / "tasks.png"
    tasks, message = show_tasks(env_id, n_tasks=2, out_png=out, seed=4)
    assert len(tasks) == 2 and all("task_seed" in t for t in tasks)
    assert tasks == show_tasks(env_id, 2, tmp_path / "again.png", seed=4)[0]
    if message is None:
        assert out.stat().st_size > 0
    else:
        assert isinstance(message, str) and "\n" not in message and not out.exists()


# gymnasium's OffScreenViewer.__del__ fails on a viewer whose GL context was never made.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_show_tasks_without_gl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MuJoCo's documented switch for "no rendering": the tasks come back, with a message.
    monkeypatch.setenv("MUJOCO_GL", "disable")
    tasks, message = show_tasks("epgkit/RandomReacher-v0", 2, tmp_path / "none.png")
    assert len(tasks) == 2
    assert isinstance(message, str) and "MUJOCO_GL" in message
    assert not (tmp_path / "none.png").exists()


class _PlainEnv(gym.Env):
    """A user's env that is not a task family (no task_seed); its frame is drawn at reset."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.shade = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.shade = int(self.np_random.integers(256))
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}

    def render(self) -> np.ndarray:
        return np.full((8, 8, 3), self.shade, np.uint8)


class _BlindFamily(gym.Env):
    """A task family (it takes a task_seed) whose env has no rgb_array rendering."""

    metadata = {"render_modes": []}
    observation_space = _PlainEnv.observation_space
    action_space = _PlainEnv.action_space

    def __init__(self, task_seed: int = 0) -> None:
        self.task = {"task_seed": task_seed, "size": task_seed % 7}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


@pytest.fixture
def user_envs():
    gym.register("epgkit_test/Plain-v0", entry_point=_PlainEnv)
    gym.register("epgkit_test/Blind-v0", entry_point=_BlindFamily)
    yield
    for env_id in ("epgkit_test/Plain-v0", "epgkit_test/Blind-v0"):
        del gym.registry[env_id]


def test_show_tasks_of_an_env_that_is_not_a_task_family(user_envs, tmp_path: Path) -> None:
    out = tmp_path / "plain.png"
    tasks, message = show_tasks("epgkit_test/Plain-v0", 3, out)
    assert tasks == [{}, {}, {}] and message is None and out.stat().st_size > 0
    assert not takes_task_seed("epgkit_test/Plain-v0") and takes_task_seed("epgkit/PointGoal-v0")


def test_show_tasks_of_an_env_without_rgb_array_says_so(user_envs, tmp_path: Path) -> None:
    tasks, message = show_tasks("epgkit_test/Blind-v0", 2, tmp_path / "blind.png")
    assert [set(t) for t in tasks] == [{"task_seed", "size"}] * 2
    assert isinstance(message, str) and "cannot render rgb_array" in message
    assert not (tmp_path / "blind.png").exists()


@pytest.mark.parametrize(
    "env_id,close",
    [("epgkit/RandomHopr-v0", "epgkit/RandomHopper-v0"), ("Hoper-v5", "Hopper-v5")],
)
def test_show_tasks_of_an_unknown_env_lists_close_ids(env_id: str, close: str, tmp_path: Path):
    from epgkit.errors import ConfigError

    with pytest.raises(ConfigError, match=f"Close registered ids: {close}"):
        show_tasks(env_id, 2, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
