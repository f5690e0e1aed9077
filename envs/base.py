"""What every epgkit task family shares: a task drawn from a seed, and what the loss may see.

A task family is an ordinary gymnasium env whose constructor takes ``task_seed``. The same
seed always gives the same task (no global RNG). Besides the usual API it declares, as in the
paper's Table 1, whether the reward is a loss input and which privileged task signal (the goal
of GoalAnt, the target of Fetch) the loss may see but the policy may not.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class TaskFamily:
    """Mixin for randomized task families.

    Subclasses set the class attributes, draw their task in ``__init__`` from
    ``np.random.default_rng(task_seed)`` and store it as a JSON-serialisable dict in ``task``.
    """

    #: Whether the paper gives the reward to the loss for this family (Table 1).
    reward_in_loss: ClassVar[bool] = False
    #: Size of the privileged task signal the loss may see (0 when there is none).
    task_signal_dim: ClassVar[int] = 0

    task: dict[str, Any]

    def task_signal(self) -> np.ndarray:
        """The privileged task signal at the current step, shape ``(task_signal_dim,)``."""
        return np.zeros(0, dtype=np.float32)


def loss_view(env: Any) -> tuple[bool, int]:
    """``(reward_in_loss, task_signal_dim)`` of any env; plain gymnasium envs give the reward."""
    base = env.unwrapped
    if isinstance(base, TaskFamily):
        return base.reward_in_loss, base.task_signal_dim
    return True, 0


def task_of(env: Any) -> dict[str, Any]:
    """The task dict of an env, empty for envs that are not task families."""
    return dict(getattr(env.unwrapped, "task", {}))
