"""PointGoal: a cheap pure-NumPy task family with the structure of the paper's GoalAnt.

A point starts near the origin and must reach a goal on a circle that it cannot observe; the
reward, ``-distance``, is what identifies the task (so the loss sees the reward, Table 1 style).
It steps in microseconds, which makes it the family for quick runs and tests.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from epgkit.envs.base import TaskFamily


class PointGoal(TaskFamily, gym.Env):
    """2-D point, hidden goal on a circle of radius ``goal_radius``; reward ``-||p - goal||``.

    Args:
        task_seed: Seed of the task (the goal angle); the same seed gives the same goal.
        goal_radius: Distance of the goal from the origin.
        angle_low: Smallest goal angle in radians.
        angle_high: Largest goal angle in radians.
        step_size: How far an action of norm 1 moves the point.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    reward_in_loss = True
    task_signal_dim = 2

    def __init__(
        self,
        task_seed: int = 0,
        goal_radius: float = 1.0,
        angle_low: float = 0.0,
        angle_high: float = 2 * math.pi,
        step_size: float = 0.1,
        render_mode: str | None = None,
    ) -> None:
        angle = float(np.random.default_rng(task_seed).uniform(angle_low, angle_high))
        self.goal = goal_radius * np.array([math.cos(angle), math.sin(angle)])
        self.task: dict[str, Any] = {
            "task_seed": task_seed,
            "goal_angle": angle,
            "goal": self.goal.tolist(),
        }
        self.step_size = step_size
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2)

    def task_signal(self) -> np.ndarray:
        return self.goal.astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.05, 0.05, size=2)
        return self._pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._pos = self._pos + self.step_size * np.clip(action, -1.0, 1.0)
        reward = -float(np.linalg.norm(self._pos - self.goal))
        return self._pos.astype(np.float32), reward, False, False, {}

    def render(self) -> np.ndarray:
        """A 64x64 picture: the goal in red, the point in blue."""
        img = np.full((64, 64, 3), 255, dtype=np.uint8)
        for xy, colour in ((self.goal, (220, 40, 40)), (self._pos, (40, 40, 220))):
            col, row = (np.clip((np.asarray(xy) + 2.0) / 4.0 * 63, 0, 63)).astype(int)
            img[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3] = colour
        return img[::-1]
