"""GoalAnt: Ant-v5 rewarded for walking toward an unobserved target (Appendix A and B).

Task (drawn from ``task_seed`` only): a target ``g = r (cos a, sin a)`` in the ground plane with
``r ~ U(goal_radius_low, goal_radius_high)`` (2 to 5 m by default, a few seconds' walk for a
trained Ant) and ``a ~ U(-pi, pi)``. Figure 18's out-of-distribution pair puts the targets on
the x-axis: ``goal_x_sign=+1`` at ``(r, 0)`` (meta-training, the ant's right), ``-1`` at
``(-r, 0)`` (the test, its left). With ``goal_layout='half-plane'`` they fill the half-plane
instead: ``a ~ U(-pi/2, pi/2)`` and ``g = (goal_x_sign * r cos a, r sin a)``, strictly inside it.

Each reset (from the env's own ``np_random``, not the task) turns the ant by a yaw drawn from
``U(-pi, pi)`` on top of Ant-v5's reset noise.

Reward per step: Ant-v5's reward with its x-velocity term replaced by the torso's velocity toward
the target, ``(d_before - d_after) / dt`` with ``d`` the torso-to-target distance in the plane::

    r = (d_before - d_after) / dt + healthy_reward - 0.5 |a|^2 - 5e-4 |clip(cfrc_ext, -1, 1)|^2

The first term is the projection ``v . u`` of the xy-velocity on the unit vector to the target,
up to O(dt), but computed from distances it telescopes: an episode's goal terms sum to
``(d_0 - d_T) / dt``. The pointwise projection does not, and an ant jittering back and forth
across the target would collect ``|v|`` on every step.

What each side sees (Table 1): the policy gets Ant-v5's default observation, which excludes the
torso's x, y (so neither the target nor the distance to it is observable); the loss gets the
reward and ``task_signal()``, the target's absolute xy position in the world frame (constant
for a task).

No-reset learning (Appendix B, ``no_reset=True``): the episode terminates only when the torso is
within ``goal_tolerance`` of the target (then the inner loop's reset puts the ant back at the
start); falling over does not terminate, and the variant is registered without a time limit.
"""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.utils import EzPickle

from epgkit.envs.base import TaskFamily

GOAL_LAYOUTS = ("axis", "half-plane")


def draw_goal(
    task_seed: int,
    goal_radius_low: float = 2.0,
    goal_radius_high: float = 5.0,
    goal_x_sign: int = 0,
    goal_layout: str = "axis",
) -> dict[str, Any]:
    """The task of ``task_seed``: target radius, polar angle and xy position, as a JSON dict.

    Args:
        task_seed: Seed of the task; the only source of randomness.
        goal_radius_low: Smallest distance of the target from the origin, in metres.
        goal_radius_high: Largest distance of the target from the origin, in metres.
        goal_x_sign: ``+1`` for targets with x > 0 only, ``-1`` for x < 0 only, ``0`` for any.
        goal_layout: With a sign, ``'axis'`` puts the targets on that half of the x-axis
            (Figure 18), ``'half-plane'`` anywhere in that half-plane.
    """
    if not 0.0 < goal_radius_low <= goal_radius_high:
        raise ValueError(
            f"goal radii ({goal_radius_low}, {goal_radius_high}) must satisfy 0 < low <= high."
        )
    if goal_x_sign not in (-1, 0, 1):
        raise ValueError(f"goal_x_sign is {goal_x_sign}; allowed: -1, 0 or 1.")
    if goal_layout not in GOAL_LAYOUTS:
        raise ValueError(f"goal_layout is {goal_layout!r}; allowed: {', '.join(GOAL_LAYOUTS)}.")
    rng = np.random.default_rng(task_seed)
    radius = float(rng.uniform(goal_radius_low, goal_radius_high))
    if goal_x_sign == 0:
        angle = float(rng.uniform(-math.pi, math.pi))
        goal = [radius * math.cos(angle), radius * math.sin(angle)]
    elif goal_layout == "axis":
        goal = [goal_x_sign * radius, 0.0]
        angle = 0.0 if goal_x_sign > 0 else math.pi
    else:
        # Mirroring the right half-plane keeps x strictly signed even at a = -pi/2.
        half = float(rng.uniform(-math.pi / 2, math.pi / 2))
        goal = [goal_x_sign * radius * math.cos(half), radius * math.sin(half)]
        angle = math.atan2(goal[1], goal[0])
    return {"task_seed": task_seed, "goal_radius": radius, "goal_angle": angle, "goal": goal}


class GoalAnt(TaskFamily, AntEnv):
    """Ant-v5 walking toward a hidden target drawn per task, with a random initial yaw per reset.

    Args:
        task_seed: Seed of the task (the target); the same seed gives the same target.
        goal_radius_low: Smallest distance of the target from the origin, in metres.
        goal_radius_high: Largest distance of the target from the origin, in metres.
        goal_x_sign: ``+1`` for targets with x > 0 only, ``-1`` for x < 0 only, ``0`` for any.
        goal_layout: With a sign, ``'axis'`` (targets on the x-axis, Figure 18) or
            ``'half-plane'``.
        goal_tolerance: Torso-to-target distance, in metres, at which the target counts as
            reached (reported as ``info["is_success"]``; ends the episode when ``no_reset``).
        no_reset: Appendix B's no-reset learning: terminate only on reaching the target, never
            on falling over.
        render_mode: Gymnasium render mode.
    """

    reward_in_loss = True
    task_signal_dim = 2

    def __init__(
        self,
        task_seed: int = 0,
        goal_radius_low: float = 2.0,
        goal_radius_high: float = 5.0,
        goal_x_sign: int = 0,
        goal_layout: str = "axis",
        goal_tolerance: float = 0.5,
        no_reset: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.task: dict[str, Any] = draw_goal(
            task_seed, goal_radius_low, goal_radius_high, goal_x_sign, goal_layout
        )
        self.goal = np.array(self.task["goal"])
        self.goal_tolerance = goal_tolerance
        self.no_reset = no_reset
        self._goal_xy = (float(self.goal[0]), float(self.goal[1]))
        self._signal = self.goal.astype(np.float32)
        AntEnv.__init__(self, terminate_when_unhealthy=not no_reset, render_mode=render_mode)
        # AntEnv recorded its own positional arguments for pickling; ours rebuild the task.
        EzPickle.__init__(
            self,
            task_seed=task_seed,
            goal_radius_low=goal_radius_low,
            goal_radius_high=goal_radius_high,
            goal_x_sign=goal_x_sign,
            goal_layout=goal_layout,
            goal_tolerance=goal_tolerance,
            no_reset=no_reset,
            render_mode=render_mode,
        )
        # Index once: ``data.body(name)`` resolves the name on every call.
        self._torso = self.model.body(self._main_body).id

    def task_signal(self) -> np.ndarray:
        """The target's absolute xy position in the world frame, shape ``(2,)``."""
        return self._signal.copy()

    def reset_model(self) -> np.ndarray:
        """Ant-v5's noisy reset, then a uniformly random yaw of the torso."""
        qpos = self.init_qpos + self.np_random.uniform(
            -self._reset_noise_scale, self._reset_noise_scale, size=self.model.nq
        )
        qvel = self.init_qvel + self._reset_noise_scale * self.np_random.standard_normal(
            self.model.nv
        )
        half_yaw = 0.5 * self.np_random.uniform(-math.pi, math.pi)
        yaw = np.array([math.cos(half_yaw), 0.0, 0.0, math.sin(half_yaw)])
        # qpos[3:7] is the free joint's (w, x, y, z) quaternion; turn it about the world z axis.
        turned = np.empty(4)
        mujoco.mju_mulQuat(turned, yaw, qpos[3:7])
        qpos[3:7] = turned
        self.set_state(qpos, qvel)
        return self._get_obs()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # Plain floats: scalar maths on 2-D vectors is several times faster than NumPy's.
        gx, gy = self._goal_xy
        x0, y0 = self.data.xpos[self._torso, :2].tolist()
        self.do_simulation(action, self.frame_skip)
        x1, y1 = self.data.xpos[self._torso, :2].tolist()
        dt = self.dt
        distance = math.hypot(gx - x1, gy - y1)
        goal_reward = (math.hypot(gx - x0, gy - y0) - distance) / dt

        healthy = self.is_healthy
        healthy_reward = healthy * self._healthy_reward
        ctrl_cost = self.control_cost(action)
        contact_cost = self.contact_cost
        reward = goal_reward + healthy_reward - ctrl_cost - contact_cost
        reached = distance < self.goal_tolerance
        terminated = (self.no_reset and reached) or (not healthy and self._terminate_when_unhealthy)
        info = {
            "x_position": x1,
            "y_position": y1,
            "x_velocity": (x1 - x0) / dt,
            "y_velocity": (y1 - y0) / dt,
            "distance_to_goal": distance,
            "is_success": reached,
            "reward_goal": goal_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), float(reward), bool(terminated), False, info
