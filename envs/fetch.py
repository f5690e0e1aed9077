"""Fetch: gymnasium-robotics' FetchReach with one target per task (Appendix A, Figure 11).

Task (drawn from ``task_seed`` only): the target is the gripper's initial position plus an
offset ``~ U(-target_range, target_range)^3`` (0.15 m, FetchReach's own distribution), fixed for
the whole task: every reset puts the same target back instead of FetchReach's fresh random one.

What each side sees (Table 1): the policy gets FetchReach's 10-d robot observation (gripper xyz,
which is also the achieved goal, finger positions, gripper and finger velocities) without the
desired goal; the reward is FetchReachDense's ``-||gripper - target||`` but is not a loss input;
the loss gets ``task_signal()``: by default (``signal="relative"``) the target's offset from the
gripper at the current step, in units of ``target_range``. The loss sees the state only after the
inner loop's running normalization, whose moments it does not see, so an absolute target could
not be compared with where the gripper is; ``signal="absolute"`` gives the target's absolute xyz
in the world frame (the frame of ``obs[:3]``), as epgkit did before.

MuJoCo compatibility is a deliberate choice: gymnasium-robotics 1.4.2's joint helpers fail an
assertion with mujoco >= 3.12 (``mjtJoint`` no longer compares equal to NumPy ints), so the
project pins ``mujoco<3.12`` and ``tests/test_envs_tasks.py`` checks the pin; construction
under a newer mujoco raises a clear error instead of a bare assertion.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import EzPickle

from epgkit.envs.base import TaskFamily

# gymnasium_robotics prints a release notice to stderr on import; workers import it often.
with contextlib.redirect_stderr(io.StringIO()):
    from gymnasium_robotics.envs.fetch.reach import MujocoFetchReachEnv


class _LeanFetchReach(MujocoFetchReachEnv):
    """FetchReach whose observation reads the two finger joints by address.

    The stock ``generate_mujoco_observations`` looks up all 15 robot joints by name every step
    (a quarter of a step's time) and keeps only the fingers'; the observation is the same.
    """

    def generate_mujoco_observations(self) -> tuple[np.ndarray, ...]:
        if not hasattr(self, "_finger_addresses"):
            # The last two robot joints are the fingers, as in the stock observation.
            names = [n for n in self._model_names.joint_names if n.startswith("robot")][-2:]
            ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
            self._finger_addresses = (self.model.jnt_qposadr[ids], self.model.jnt_dofadr[ids])
        qpos_at, dof_at = self._finger_addresses
        dt = self.n_substeps * self.model.opt.timestep
        grip_pos = self._utils.get_site_xpos(self.model, self.data, "robot0:grip")
        grip_velp = self._utils.get_site_xvelp(self.model, self.data, "robot0:grip") * dt
        fingers, finger_vel = self.data.qpos[qpos_at], self.data.qvel[dof_at] * dt
        none = np.zeros(0)  # FetchReach has no object
        return grip_pos, none, none, fingers, none, none, none, grip_velp, finger_vel


class FetchReach(TaskFamily, gym.Env, EzPickle):
    """FetchReachDense with a per-task target that the policy does not observe.

    Args:
        task_seed: Seed of the task (the target); the same seed gives the same target.
        target_range: Half-width, in metres, of the box around the gripper's start from which
            the target is drawn.
        signal: What ``task_signal()`` gives the loss: ``"relative"``, the target minus the
            gripper's position at the current step divided by ``target_range``; ``"absolute"``,
            the target's world xyz.
        render_mode: Gymnasium render mode (``"human"`` or ``"rgb_array"``).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 25}
    reward_in_loss = False
    task_signal_dim = 3

    def __init__(
        self,
        task_seed: int = 0,
        target_range: float = 0.15,
        signal: str = "relative",
        render_mode: str | None = None,
    ) -> None:
        if signal not in ("relative", "absolute"):
            raise ValueError(f"Fetch signal must be 'relative' or 'absolute', not {signal!r}")
        EzPickle.__init__(
            self, task_seed=task_seed, target_range=target_range, signal=signal,
            render_mode=render_mode,
        )  # fmt: skip
        offset = np.random.default_rng(task_seed).uniform(-target_range, target_range, size=3)
        try:
            self._robot = _LeanFetchReach(reward_type="dense", render_mode=render_mode)
        except AssertionError as error:
            raise RuntimeError(
                f"gymnasium-robotics' Fetch does not work with mujoco {mujoco.__version__}; "
                "install mujoco<3.12 as pyproject.toml pins it."
            ) from error
        # The gripper's start is fixed by the model, so the target depends on the seed alone.
        self.target = self._robot.initial_gripper_xpos[:3] + offset
        self._robot.goal = self.target.copy()
        self.task: dict[str, Any] = {
            "task_seed": task_seed,
            "target_offset": offset.tolist(),
            "target": self.target.tolist(),
        }
        self.signal, self._scale = signal, target_range
        # The site whose position is obs[:3]; the simulation holds it between steps.
        self._grip = mujoco.mj_name2id(self._robot.model, mujoco.mjtObj.mjOBJ_SITE, "robot0:grip")
        self.render_mode = render_mode
        self.observation_space = self._robot.observation_space["observation"]
        self.action_space = self._robot.action_space

    def task_signal(self) -> np.ndarray:
        """The target relative to the gripper now, in units of ``target_range``, or the
        target's absolute world xyz (``signal="absolute"``); shape ``(3,)``."""
        if self.signal == "absolute":
            return self.target.astype(np.float32)
        gripper = self._robot.data.site_xpos[self._grip]
        return ((self.target - gripper) / self._scale).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self._robot.reset(seed=seed)
        # FetchReach's reset has just drawn a random goal; the task's target replaces it.
        self._robot.goal = self.target.copy()
        return obs["observation"], info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._robot.step(action)
        return obs["observation"], float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """A frame from FetchReach's renderer, the target shown as a red sphere."""
        return self._robot.render()

    def close(self) -> None:
        self._robot.close()
