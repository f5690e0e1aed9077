"""RandomHopper, RandomWalker and RandomReacher: the paper's randomized-physics MuJoCo families.

Appendix A of Houthooft et al. (2018): Hopper and Walker2d with randomized gravity, friction,
body mass and link thickness, and Reacher with randomized link lengths. Each class subclasses
gymnasium's v5 env, so termination and observations are the stock ones (Hopper and Walker step
through ``lean_step``'s bit-identical, faster ``step``); only the compiled model differs.
Hopper and Walker are rewarded as in the paper, by forward velocity minus the stock control
cost, ``x_velocity - 1e-3 * |a|^2``: their ``healthy_reward`` defaults to 0 instead of
gymnasium's +1 a step, which lets a policy score by standing still (``healthy_reward=1.0``
gives the stock reward back). Geometry (capsule radius, link length) is edited in an ``MjSpec``
and recompiled, so mass and inertia follow the new shape; masses, friction and gravity are then
set on the compiled model and ``mj_setConst`` refreshes the constants derived from them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.utils import EzPickle

from epgkit.envs.base import TaskFamily
from epgkit.envs.lean_step import LeanHopperStep, LeanWalkerStep

Range = tuple[float, float]


@functools.cache
def _base_spec(xml_file: str) -> mujoco.MjSpec:
    """The parsed stock model, cached: copying a spec (~10 µs) beats re-parsing it (~300 µs)."""
    return mujoco.MjSpec.from_file(expand_model_path(xml_file))


def _checked(name: str, bounds: Range) -> Range:
    low, high = (float(b) for b in bounds)
    if not 0.0 < low <= high:
        raise ValueError(f"{name}={bounds!r} is not a range; need 0 < low <= high.")
    return low, high


class _RandomPhysics(TaskFamily):
    """Shared by RandomHopper and RandomWalker: sample the task, then build its model.

    Draw order from ``default_rng(task_seed)``: gravity, friction, one mass factor per body
    (world excluded, spec order), one radius factor per capsule geom (spec order).
    """

    xml_file: str
    _stock: type  # the gymnasium v5 env whose reward, termination and observations are used

    def __init__(
        self,
        task_seed: int = 0,
        gravity_range: Range = (2.0, 20.0),
        friction_range: Range = (0.5, 2.0),
        mass_range: Range = (0.5, 2.0),
        thickness_range: Range = (0.5, 2.0),
        healthy_reward: float = 0.0,
        render_mode: str | None = None,
        **stock: Any,
    ) -> None:
        self.task = self._sample_task(
            task_seed, gravity_range, friction_range, mass_range, thickness_range
        )
        self._stock.__init__(
            self,
            xml_file=self.xml_file,
            healthy_reward=healthy_reward,
            render_mode=render_mode,
            **stock,
        )
        # Pickles rebuild the task from its seed, not from the stock constructor's arguments.
        EzPickle.__init__(
            self,
            task_seed,
            gravity_range,
            friction_range,
            mass_range,
            thickness_range,
            healthy_reward,
            render_mode,
            **stock,
        )

    def _sample_task(
        self, task_seed: int, gravity: Range, friction: Range, mass: Range, thickness: Range
    ) -> dict[str, Any]:
        spec = _base_spec(self.xml_file)
        bodies = [b.name for b in spec.bodies[1:]]
        capsules = [g.name for g in spec.geoms if g.type == mujoco.mjtGeom.mjGEOM_CAPSULE]
        rng = np.random.default_rng(task_seed)
        gravity_z = -rng.uniform(*_checked("gravity_range", gravity))
        friction_scale = rng.uniform(*_checked("friction_range", friction))
        mass_scale = rng.uniform(*_checked("mass_range", mass), size=len(bodies))
        radius_scale = rng.uniform(*_checked("thickness_range", thickness), size=len(capsules))
        return {
            "task_seed": int(task_seed),
            "gravity_z": float(gravity_z),
            "friction_scale": float(friction_scale),
            "body_mass_scale": dict(zip(bodies, mass_scale.tolist(), strict=True)),
            "capsule_radius_scale": dict(zip(capsules, radius_scale.tolist(), strict=True)),
        }

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        # Called by MujocoEnv.__init__ in place of loading the XML, so init_qpos/init_qvel and
        # the spaces the stock constructor derives all come from the randomized model.
        spec = _base_spec(self.xml_file).copy()
        for name, scale in self.task["capsule_radius_scale"].items():
            spec.geom(name).size[0] *= scale
        model = spec.compile()  # inertiafromgeom: thicker capsules are heavier
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        model.opt.gravity[:] = (0.0, 0.0, self.task["gravity_z"])
        # One global factor: MuJoCo gives a contact the larger friction of its two geoms, so
        # scaling every geom (floor included) scales every contact's friction by exactly this.
        model.geom_friction[:] *= self.task["friction_scale"]
        ids = [model.body(name).id for name in self.task["body_mass_scale"]]
        mass_scale = np.array(list(self.task["body_mass_scale"].values()))
        model.body_mass[ids] *= mass_scale
        model.body_inertia[ids] *= mass_scale[:, None]  # same shape, so inertia scales with mass
        data = mujoco.MjData(model)
        mujoco.mj_setConst(model, data)  # body_subtreemass, dof_invweight0, ... follow masses
        # mj_setConst uses data as scratch and leaves qpos at zero, not qpos0; MujocoEnv reads
        # init_qpos from this data, so restore it (else the hopper starts inside the floor).
        mujoco.mj_resetData(model, data)
        return model, data


class RandomHopper(_RandomPhysics, LeanHopperStep, HopperEnv):
    """Hopper-v5 with gravity, friction, body masses and capsule radii drawn from ``task_seed``,
    rewarded by forward velocity (no healthy bonus by default).

    Args:
        task_seed: Seed of the task; the same seed gives the same physics.
        gravity_range: Gravity is ``(0, 0, -U(*gravity_range))`` in m/s².
        friction_range: One factor, ``U(*friction_range)``, on the friction of every geom.
        mass_range: Each body's mass and inertia times its own ``U(*mass_range)``.
        thickness_range: Each capsule's radius times its own ``U(*thickness_range)``, before
            the mass factor (mass and inertia are recomputed from the new shape).
        healthy_reward: Reward for each step the hopper is healthy: 0, the paper's
            forward-velocity reward; 1.0 is Hopper-v5's stock reward.
        render_mode: Gymnasium render mode, e.g. ``"rgb_array"``.
        **stock: Hopper-v5's other reward and termination arguments, e.g.
            ``ctrl_cost_weight``.
    """

    xml_file = "hopper.xml"
    _stock = HopperEnv
    reward_in_loss = False
    task_signal_dim = 0


class RandomWalker(_RandomPhysics, LeanWalkerStep, Walker2dEnv):
    """Walker2d-v5 with gravity, friction, body masses and capsule radii drawn from ``task_seed``,
    rewarded by forward velocity (no healthy bonus by default).

    Args:
        task_seed: Seed of the task; the same seed gives the same physics.
        gravity_range: Gravity is ``(0, 0, -U(*gravity_range))`` in m/s².
        friction_range: One factor, ``U(*friction_range)``, on the friction of every geom.
        mass_range: Each body's mass and inertia times its own ``U(*mass_range)``.
        thickness_range: Each capsule's radius times its own ``U(*thickness_range)``, before
            the mass factor (mass and inertia are recomputed from the new shape).
        healthy_reward: Reward for each step the walker is healthy: 0, the paper's
            forward-velocity reward; 1.0 is Walker2d-v5's stock reward.
        render_mode: Gymnasium render mode, e.g. ``"rgb_array"``.
        **stock: Walker2d-v5's other reward and termination arguments, e.g.
            ``ctrl_cost_weight``.
    """

    xml_file = "walker2d_v5.xml"
    _stock = Walker2dEnv
    reward_in_loss = False
    task_signal_dim = 0


class RandomReacher(TaskFamily, ReacherEnv):
    """Reacher-v5 whose two link lengths are the stock 0.1 m times ``U(*length_range)`` each.

    The target stays in the observation (stock Reacher-v5 observation). It is drawn as in
    Reacher-v5, uniformly in the disc of radius 0.2, but restricted to the annulus this arm's
    fingertip can reach (the elbow turns at most 3 rad), so every task stays solvable.

    Args:
        task_seed: Seed of the task; the same seed gives the same link lengths.
        length_range: Range of the per-link length factor.
        render_mode: Gymnasium render mode, e.g. ``"rgb_array"``.
    """

    reward_in_loss = False
    task_signal_dim = 0
    _link = 0.1  # stock length of each link, m
    _tip = 0.01  # stock offset of the fingertip beyond the second link, m
    _goal_radius = 0.2  # Reacher-v5 draws goals with norm < 0.2
    _elbow_limit = 3.0  # joint1 range, rad

    def __init__(
        self,
        task_seed: int = 0,
        length_range: Range = (0.5, 1.5),
        render_mode: str | None = None,
    ) -> None:
        scale = np.random.default_rng(task_seed).uniform(
            *_checked("length_range", length_range), size=2
        )
        lengths = self._link * scale
        self.task = {
            "task_seed": int(task_seed),
            "link_length_scale": scale.tolist(),
            "link_lengths": lengths.tolist(),
        }
        upper, fore = lengths[0], lengths[1] + self._tip
        self._goal_min = math.sqrt(
            upper**2 + fore**2 + 2 * upper * fore * math.cos(self._elbow_limit)
        )
        self._goal_max = min(self._goal_radius, upper + fore)
        ReacherEnv.__init__(self, render_mode=render_mode)
        EzPickle.__init__(self, task_seed, length_range, render_mode)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        upper, lower = self.task["link_lengths"]
        spec = _base_spec("reacher.xml").copy()
        spec.geom("link0").fromto = [0, 0, 0, upper, 0, 0]
        spec.body("body1").pos = [upper, 0, 0]
        spec.geom("link1").fromto = [0, 0, 0, lower, 0, 0]
        spec.body("fingertip").pos = [lower + self._tip, 0, 0]
        model = spec.compile()  # link masses and inertias follow the new lengths
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def reset_model(self) -> np.ndarray:
        # Reacher-v5's reset, with the goal kept inside the reachable annulus.
        qpos = self.np_random.uniform(low=-0.1, high=0.1, size=self.model.nq) + self.init_qpos
        while True:
            goal = self.np_random.uniform(low=-self._goal_radius, high=self._goal_radius, size=2)
            if self._goal_min < np.linalg.norm(goal) < self._goal_max:
                break
        self.goal = goal
        qpos[-2:] = goal
        qvel = self.init_qvel + self.np_random.uniform(low=-0.005, high=0.005, size=self.model.nv)
        qvel[-2:] = 0
        self.set_state(qpos, qvel)
        return self._get_obs()
