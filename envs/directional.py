"""DirectionalHopper and DirectionalHalfCheetah: reward forward or backward running (Appendix A).

Each task draws a direction ``d in {-1, +1}`` from its ``task_seed``; the reward is the paper's
signed velocity minus gymnasium v5's control cost:

* Hopper-v5:      ``d * x_velocity - 1e-3 * |a|^2``
* HalfCheetah-v5: ``d * x_velocity - 0.1 * |a|^2``

(the same form as MAML's ``HalfCheetahEnvRandDirec``, which the paper's footnote 3 cites).
HalfCheetah has no healthy bonus; the Hopper's ``healthy_reward`` defaults to 0 instead of
gymnasium's +1 a step, which would pay a policy for standing still whatever the direction
(``healthy_reward=1.0`` gives the stock reward back). Termination is the stock one. The
observation is the stock one, so the policy cannot see ``d``; the loss sees the reward
(Table 1: ``reward_in_loss = True``, no task signal). The sign is folded into gymnasium's
``forward_reward_weight``, so the stock step computes it (for the Hopper, ``lean_step``'s
bit-identical, faster version of it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.utils import EzPickle

from epgkit.envs.base import TaskFamily
from epgkit.envs.lean_step import LeanHopperStep


def draw_direction(task_seed: int) -> int:
    """The task's direction, ``+1`` (forward) or ``-1`` (backward), from ``task_seed`` alone."""
    return int(np.random.default_rng(task_seed).choice((-1, 1)))


class DirectionalHopper(TaskFamily, LeanHopperStep, HopperEnv):
    """Hopper-v5 rewarded for hopping forward or backward (signed velocity, no healthy bonus by
    default), the direction drawn per task.

    Args:
        task_seed: Seed of the task (the direction); the same seed gives the same direction.
        forward_reward_weight: Magnitude of the velocity term; its sign is the task's direction.
        healthy_reward: Reward for each step the hopper is healthy: 0, the paper's signed
            velocity reward; 1.0 is Hopper-v5's stock bonus.
        render_mode: Gymnasium render mode.
    """

    reward_in_loss = True
    task_signal_dim = 0

    def __init__(
        self,
        task_seed: int = 0,
        forward_reward_weight: float = 1.0,
        healthy_reward: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.direction = draw_direction(task_seed)
        self.task: dict[str, Any] = {"task_seed": task_seed, "direction": self.direction}
        HopperEnv.__init__(
            self,
            forward_reward_weight=self.direction * forward_reward_weight,
            healthy_reward=healthy_reward,
            render_mode=render_mode,
        )
        # HopperEnv recorded its own positional arguments for pickling; ours rebuild the task.
        EzPickle.__init__(
            self,
            task_seed=task_seed,
            forward_reward_weight=forward_reward_weight,
            healthy_reward=healthy_reward,
            render_mode=render_mode,
        )


class DirectionalHalfCheetah(TaskFamily, HalfCheetahEnv):
    """HalfCheetah-v5 rewarded for running forward or backward, the direction drawn per task.

    Args:
        task_seed: Seed of the task (the direction); the same seed gives the same direction.
        forward_reward_weight: Magnitude of the velocity term; its sign is the task's direction.
        render_mode: Gymnasium render mode.
    """

    reward_in_loss = True
    task_signal_dim = 0

    def __init__(
        self,
        task_seed: int = 0,
        forward_reward_weight: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        self.direction = draw_direction(task_seed)
        self.task: dict[str, Any] = {"task_seed": task_seed, "direction": self.direction}
        HalfCheetahEnv.__init__(
            self,
            forward_reward_weight=self.direction * forward_reward_weight,
            render_mode=render_mode,
        )
        # HalfCheetahEnv recorded its own positional arguments for pickling; ours rebuild the task.
        EzPickle.__init__(
            self,
            task_seed=task_seed,
            forward_reward_weight=forward_reward_weight,
            render_mode=render_mode,
        )
