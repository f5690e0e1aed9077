"""Gymnasium's Hopper-v5 and Walker2d-v5 ``step``, the same numbers in fewer Python calls.

An inner loop is mostly environment steps, and the stock ``step`` spends about a third of its
time outside the physics: it evaluates ``is_healthy`` twice (once for the reward, once for
termination), rebuilds the full state vector each time, and goes through several properties
and NumPy wrapper functions. These mixins compute each quantity once, with the same arithmetic
in the same order, so observations, rewards, terminations and infos are bit-for-bit the stock
ones for the same reward arguments (tests/test_envs_lean_step.py steps both side by side, with
and without the healthy bonus). Put a mixin before the gymnasium class in the bases.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np


class LeanWalkerStep:
    """Walker2d-v5's ``step``: healthy while the torso's height and angle are in range."""

    def _healthy_now(self, qpos: np.ndarray, qvel: np.ndarray) -> bool:
        min_z, max_z = self._healthy_z_range
        min_angle, max_angle = self._healthy_angle_range
        return bool(min_z < qpos[1] < max_z and min_angle < qpos[2] < max_angle)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, float]]:
        model, data = self.model, self.data
        action = np.asarray(action)
        if action.shape != (model.nu,):
            raise ValueError(
                f"Action dimension mismatch. Expected {(model.nu,)}, found {action.shape}"
            )
        qpos, qvel = data.qpos, data.qvel
        x_before = qpos[0]
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=self.frame_skip)
        # The stock step fills cacc/cfrc_*: nothing here reads them, but users of data may.
        mujoco.mj_rnePostConstraint(model, data)
        x_after = qpos[0]
        x_velocity = (x_after - x_before) / self.dt

        start = 1 if self._exclude_current_positions_from_observation else 0
        velocity = np.minimum(np.maximum(qvel, -10.0), 10.0)  # np.clip, without its wrapper
        observation = np.concatenate((qpos[start:], velocity))

        healthy = self._healthy_now(qpos, qvel)
        forward_reward = self._forward_reward_weight * x_velocity
        healthy_reward = healthy * self._healthy_reward
        ctrl_cost = self._ctrl_cost_weight * np.add.reduce(np.square(action), axis=None)
        reward = (forward_reward + healthy_reward) - ctrl_cost
        terminated = (not healthy) and self._terminate_when_unhealthy
        info = {
            "x_position": x_after,
            "z_distance_from_origin": qpos[1] - self.init_qpos[1],
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": healthy_reward,
        }
        if self.render_mode == "human":
            self.render()
        return observation, reward, terminated, False, info


class LeanHopperStep(LeanWalkerStep):
    """Hopper-v5's ``step``: also unhealthy when any state past the torso's x, z leaves its
    range (the stock ``state_vector()[2:]``)."""

    def _healthy_now(self, qpos: np.ndarray, qvel: np.ndarray) -> bool:
        min_state, max_state = self._healthy_state_range
        state = np.concatenate((qpos[2:], qvel))
        in_range = ((min_state < state) & (state < max_state)).all()
        return bool(in_range) and super()._healthy_now(qpos, qvel)
