"""Pictures of a trained policy: an episode of the final policy as a GIF (Figures 3, 4, 14).

MuJoCo renders offscreen through EGL (set before mujoco is imported); without a GL backend
``render_problem`` says why in one line before any training, and ``render_episode`` returns a
one-line reason instead of writing anything.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from epgkit.method.inner_loop import InnerLoop  # noqa: E402
from epgkit.run.paths import naming  # noqa: E402
from epgkit.tools.envshow import (  # noqa: E402
    mujoco_gl_problem,
    quiet_failed_viewers,
    render_failure,
    render_modes,
)


def _rendering(inner: InnerLoop) -> InnerLoop:
    return dataclasses.replace(inner, env_kwargs=(*inner.env_kwargs, ("render_mode", "rgb_array")))


def render_problem(inner: InnerLoop, task_seed: int) -> str | None:
    """Why no frame of ``inner``'s env can be rendered here, or None if one can.

    Cheap (one reset and one frame), so a command checks it before training a policy that
    could not be pictured anyway. Call ``mujoco_gl_problem`` before anything imports mujoco
    so that a missing GL backend is reported here rather than failing the import.
    """
    gl_problem = mujoco_gl_problem()
    modes = render_modes(inner.env_id)
    if modes is not None and "rgb_array" not in modes:
        return f"no frames: {inner.env_id} cannot render rgb_array frames (its modes: {modes})"
    with quiet_failed_viewers():
        env = _rendering(inner).make_env(task_seed)
        try:
            env.reset(seed=task_seed % 2**31)
            frame = env.render()
        except Exception as error:  # no GL shows as EGLError, FatalError, ImportError, ...
            return "no frames: " + render_failure(env, inner.env_id, error, gl_problem)
        finally:
            env.close()
    if frame is None or np.ndim(frame) != 3:
        return f"no frames: {inner.env_id} rendered no rgb_array frame"
    return None


def mean_action(inner: InnerLoop, policy: dict[str, np.ndarray]) -> Callable[[np.ndarray], Any]:
    """The trained policy's mean action for a raw observation of ``inner``'s env, the
    observation normalized with the moments training ended with (``Result.policy``)."""
    dims = inner.dims()
    pi = inner.policy_for(dims)
    theta = {k: torch.from_numpy(v).unsqueeze(0) for k, v in policy.items()
             if not k.startswith("obs_")}  # fmt: skip

    def act(obs: np.ndarray) -> Any:
        obs_n = np.clip((obs - policy["obs_mean"]) / policy["obs_std"], -10, 10)
        with torch.no_grad():
            dist = pi.dist(theta, torch.tensor(obs_n, dtype=torch.float32)[None, None])
            a = pi.mode(dist)[0, 0].numpy()
        return int(a[0]) if dims.discrete else np.clip(a, dims.act_low, dims.act_high)

    return act


@dataclasses.dataclass(frozen=True)
class Episode:
    """What the rendered episode did: whether a GIF shows locomotion or a fall is in numbers.

    Attributes:
        total: The episode's return.
        steps: Env steps taken.
        ended: ``"terminated"`` (e.g. the hopper fell), ``"truncated"`` (the env's time
            limit) or ``"max_steps"`` (the GIF's limit, the episode still going).
        x_moved: How far the body moved along x, for envs whose ``info`` reports
            ``x_position`` (Hopper, Walker, HalfCheetah); else None.
        reason: None, or why no picture could be made.
    """

    total: float
    steps: int
    ended: str
    x_moved: float | None
    reason: str | None

    def describe(self) -> str:
        """One line, e.g. ``return 127.53 over 105 steps (terminated), x moved +1.02``."""
        line = f"return {self.total:.2f} over {self.steps} steps ({self.ended})"
        return line if self.x_moved is None else f"{line}, x moved {self.x_moved:+.2f}"


def follow(env: Any) -> None:
    """Points the camera of a MuJoCo env at the body that moves about: the one its camera config
    names to track (``trackbodyid``: Hopper's and Walker's thigh), else, for a config that sets
    no point to look at (HalfCheetah, Ant), the root body when it is free to travel.

    Gymnasium renders through a free camera, which ignores ``trackbodyid``: a policy that runs
    further than about a metre leaves the picture. The camera keeps its distance, angles and
    height; only the point it looks at follows the body along the ground. A fixed arm or a
    scene with its own view (Reacher, Fetch) is left as it is; so is the first frame, rendered
    before the viewer exists, when the body is still where the camera looks."""
    base = getattr(env, "unwrapped", env)
    renderer = getattr(base, "mujoco_renderer", None)
    viewer = getattr(renderer, "viewer", None)
    if viewer is None:
        return
    config = getattr(renderer, "default_cam_config", None) or {}
    body = config.get("trackbodyid")
    if body is None and "lookat" not in config and _root_travels(base.model):
        body = 1
    if isinstance(body, int) and body > 0:  # 0: the world
        viewer.cam.lookat[:2] = base.data.xpos[body][:2]


def _root_travels(model: Any) -> bool:
    """Whether the first body under the world hangs on a free or sliding joint (a robot that
    walks or runs, not an arm on a fixed base)."""
    import mujoco

    if model.nbody < 2 or model.body_jntnum[1] == 0:
        return False
    kinds = model.jnt_type[model.body_jntadr[1] : model.body_jntadr[1] + model.body_jntnum[1]]
    return bool(np.isin(kinds, [mujoco.mjtJoint.mjJNT_FREE, mujoco.mjtJoint.mjJNT_SLIDE]).any())


def render_episode(
    inner: InnerLoop,
    policy: dict[str, np.ndarray],
    task_seed: int,
    out: str | Path,
    max_steps: int = 300,
    every: int = 2,
    width: int | None = None,
) -> Episode:
    """Runs one episode of the trained policy (its mean action) and writes a GIF of it,
    ``width`` pixels wide if given (the height scaled alike), else as large as the env renders.
    """
    from PIL import Image

    env = _rendering(inner).make_env(task_seed)
    act = mean_action(inner, policy)
    obs, start = env.reset(seed=task_seed % 2**31)
    frames, total, reason = [], 0.0, None
    ended, steps, x_start, x_end = "max_steps", 0, start.get("x_position"), None
    try:
        for t in range(max_steps):
            if t % every == 0 and reason is None:
                with quiet_failed_viewers():
                    try:
                        follow(env)
                        frames.append(np.asarray(env.render()))
                    except Exception as err:  # no GL shows as EGLError, FatalError, ImportError
                        reason = "no frames: " + render_failure(
                            env, inner.env_id, err, mujoco_gl_problem()
                        )
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total, steps = total + float(reward), t + 1
            x_end = info.get("x_position")
            if terminated or truncated:
                ended = "terminated" if terminated else "truncated"
                break
    finally:
        env.close()
    if reason is None and frames:
        images = [Image.fromarray(f) for f in frames]
        if width is not None:
            height = max(1, round(images[0].height * width / images[0].width))
            images = [image.resize((width, height), Image.LANCZOS) for image in images]
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with naming(out):
            images[0].save(
                out, save_all=True, append_images=images[1:], duration=40 * every, loop=0
            )
    x_moved = None if x_start is None or x_end is None else float(x_end - x_start)
    return Episode(total, steps, ended, x_moved, reason)
