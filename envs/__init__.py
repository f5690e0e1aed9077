"""epgkit's task families, registered with gymnasium under the ``epgkit/`` namespace.

Importing this package registers them; ``gym.make("epgkit/PointGoal-v0", task_seed=3)``
then builds task 3 of the family. Each registration is one ``gym.register`` call below.
"""

import gymnasium as gym

from epgkit.envs.base import TaskFamily, loss_view, task_of

__all__ = ["TaskFamily", "loss_view", "task_of", "registered"]


def registered() -> list[str]:
    """Ids of every env registered by epgkit, sorted."""
    return sorted(i for i in gym.registry if i.startswith("epgkit/"))


gym.register("epgkit/PointGoal-v0", "epgkit.envs.point:PointGoal", max_episode_steps=50)
gym.register(
    "epgkit/RandomHopper-v0", "epgkit.envs.mujoco_random:RandomHopper", max_episode_steps=1000
)
gym.register(
    "epgkit/RandomWalker-v0", "epgkit.envs.mujoco_random:RandomWalker", max_episode_steps=1000
)
gym.register(
    "epgkit/RandomReacher-v0", "epgkit.envs.mujoco_random:RandomReacher", max_episode_steps=50
)
gym.register(
    "epgkit/DirectionalHopper-v0",
    "epgkit.envs.directional:DirectionalHopper",
    max_episode_steps=1000,
)
gym.register(
    "epgkit/DirectionalHalfCheetah-v0",
    "epgkit.envs.directional:DirectionalHalfCheetah",
    max_episode_steps=1000,
)
gym.register("epgkit/GoalAnt-v0", "epgkit.envs.goalant:GoalAnt", max_episode_steps=1000)
gym.register(
    "epgkit/GoalAntPosX-v0",
    "epgkit.envs.goalant:GoalAnt",
    max_episode_steps=1000,
    kwargs={"goal_x_sign": 1},
)
gym.register(
    "epgkit/GoalAntNegX-v0",
    "epgkit.envs.goalant:GoalAnt",
    max_episode_steps=1000,
    kwargs={"goal_x_sign": -1},
)
# Appendix B: no time limit; an episode ends only when the ant reaches its target.
gym.register(
    "epgkit/GoalAntNoReset-v0",
    "epgkit.envs.goalant:GoalAnt",
    max_episode_steps=None,
    kwargs={"no_reset": True},
)
gym.register("epgkit/Fetch-v0", "epgkit.envs.fetch:FetchReach", max_episode_steps=50)
