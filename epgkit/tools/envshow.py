"""A picture of a task family: one rendered frame per task, tiled side by side into a PNG.

``show_tasks`` is how one checks by eye that a family's tasks really differ (Figure 4 of the
paper shows RandomHopper tasks this way). MuJoCo envs render offscreen; with no OpenGL backend
the tasks are still built and returned, with a one-line message instead of a PNG. Envs that are
not task families (``Hopper-v5``) are shown too: one reset per seed, each with an empty task.
"""

from __future__ import annotations

import gc
import os
import sys

# Before anything imports mujoco: EGL renders headless here (Mesa's software EGL). gymnasium
# reads the variable again at render time, so this also holds if mujoco was imported earlier.
os.environ.setdefault("MUJOCO_GL", "egl")

import functools  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.envs.registration import load_env_creator  # noqa: E402

import epgkit.envs  # noqa: E402  (registers the epgkit/ ids)
from epgkit.envs.ids import takes_task_seed  # noqa: E402
from epgkit.run.paths import naming  # noqa: E402

GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri (or libosmesa6 with MUJOCO_GL=osmesa)"


def _one_line(error: BaseException) -> str:
    return (f"{type(error).__name__}: {error}".splitlines() or [""])[0]


@functools.cache
def mujoco_gl_problem() -> str | None:
    """Imports mujoco; if its GL backend cannot be loaded, imports it without one and says why.

    MuJoCo loads the backend named by ``MUJOCO_GL`` when it is imported, and a missing library
    fails right there (OSMesa as an AttributeError from PyOpenGL), which would stop even the
    envs that only need physics. Call this before anything imports mujoco.

    Returns:
        None if mujoco imported with its backend (or was imported already), else a one-line
        reason; mujoco is then imported without rendering, so MuJoCo envs can still be built.
    """
    if "mujoco" in sys.modules:
        return None
    saved = {name: os.environ.get(name) for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    try:
        import mujoco  # noqa: F401

        return None
    except Exception as error:  # whatever the backend raises: ImportError, AttributeError, ...
        reason = _one_line(error)
    os.environ["MUJOCO_GL"] = "disable"
    try:
        import mujoco  # noqa: F401, F811
    finally:
        # Later messages name the backend the user asked for, and nothing else sees our switch.
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return reason


@contextmanager
def quiet_failed_viewers() -> Iterator[None]:
    """Drops the traceback gymnasium's ``OffScreenViewer.__del__`` prints to stderr for a viewer
    whose GL context was never made: the render error itself is already reported in one line."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if "OffScreenViewer" not in getattr(unraisable.object, "__qualname__", ""):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()  # a viewer caught in a reference cycle is deleted here, still silenced
        sys.unraisablehook = previous


def render_modes(env_id: str) -> list[str] | None:
    """The render modes the env of ``env_id`` declares, or None when its class does not say."""
    entry = gym.spec(env_id.rpartition(":")[2]).entry_point
    creator = load_env_creator(entry) if isinstance(entry, str) else entry
    metadata = getattr(creator, "metadata", None)
    modes = metadata.get("render_modes") if isinstance(metadata, dict) else None
    return None if modes is None else list(modes)


def render_failure(env: gym.Env, env_id: str, error: Exception, gl_problem: str | None) -> str:
    """Why ``env.render()`` raised ``error``, in one line; for a MuJoCo env, what GL needs."""
    if not hasattr(env.unwrapped, "mujoco_renderer"):
        return f"{env_id} could not render a frame ({_one_line(error)})."
    backend = os.environ.get("MUJOCO_GL")
    return (
        f"cannot render with MUJOCO_GL={backend!r} ({gl_problem or _one_line(error)}); "
        f"a headless Debian needs {GL_PACKAGES}."
    )


def _task_seeds(seed: int, n_tasks: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n_tasks)]


def _frame(
    env_id: str, task_seed: int, n_steps: int, family: bool, render: bool, gl_problem: str | None
) -> tuple[dict[str, Any], np.ndarray | str | None]:
    """Build task ``task_seed`` (an env that is not a task family is only reset with it), take
    ``n_steps`` random steps and render: the frame, None if not asked to render, or why not."""
    kwargs: dict[str, Any] = {"task_seed": task_seed} if family else {}
    if render:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, **kwargs)
    try:
        task = epgkit.envs.task_of(env)
        env.reset(seed=task_seed)
        env.action_space.seed(task_seed)
        for _ in range(n_steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
        if not render:
            return task, None
        try:
            frame = env.render()
        except Exception as error:  # no GL shows as EGLError, FatalError, ImportError, ...
            return task, "no PNG: " + render_failure(env, env_id, error, gl_problem)
        if frame is None or np.ndim(frame) != 3:
            got = type(frame).__name__
            return task, f"no PNG: {env_id} rendered no rgb_array frame (got {got})."
        return task, np.asarray(frame)
    finally:
        env.close()


def _title(task: dict[str, Any]) -> str:
    """Key parameters, one per line: numbers, short lists in full, per-part dicts as a range."""
    lines = [f"task {task.get('task_seed')}"]
    for key, value in task.items():
        if key == "task_seed":
            continue
        if isinstance(value, dict):
            value = list(value.values())
        floats = isinstance(value, list) and value and all(isinstance(v, float) for v in value)
        if isinstance(value, float):
            lines.append(f"{key} {value:.3g}")
        elif floats and len(value) <= 3:
            lines.append(f"{key} " + ", ".join(f"{v:.2g}" for v in value))
        elif floats:
            lines.append(f"{key} {min(value):.2g}–{max(value):.2g}")
        else:
            lines.append(f"{key} {value}")
    return "\n".join(lines)


def show_tasks(
    env_id: str, n_tasks: int, out_png: str | Path, seed: int = 0
) -> tuple[list[dict[str, Any]], str | None]:
    """Render one frame of each of ``n_tasks`` tasks of ``env_id`` side by side into ``out_png``.

    Task seeds come from ``np.random.SeedSequence(seed)``; each task is reset with its own seed
    and takes a few random steps before its frame is taken. An env that is not a task family
    (it takes no ``task_seed``) is reset with each seed instead, and its tasks are ``{}``.

    Args:
        env_id: A registered gymnasium id, e.g. ``"epgkit/RandomHopper-v0"``.
        n_tasks: How many tasks to build and show.
        out_png: Where to write the tiled PNG.
        seed: Seed from which the task seeds are derived.

    Returns:
        The task dicts, and None when the PNG was written or a one-line message saying why
        nothing could be rendered (no OpenGL backend, no rgb_array rendering); the tasks are
        returned either way.

    Raises:
        ConfigError: An unknown env id (listing close ones) or a module that cannot be imported.
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks={n_tasks} must be at least 1.")
    gl_problem = mujoco_gl_problem()  # first: loading the env's module may import mujoco
    family = takes_task_seed(env_id)
    modes = render_modes(env_id)
    message = None
    if modes is not None and "rgb_array" not in modes:
        message = f"no PNG: {env_id} cannot render rgb_array frames (its render modes: {modes})."
    seeds = _task_seeds(seed, n_tasks)
    tasks, frames = [], []
    with quiet_failed_viewers():
        for task_seed in seeds:
            # After one failure the others would fail alike: only the tasks are still built.
            task, frame = _frame(env_id, task_seed, 10, family, message is None, gl_problem)
            tasks.append(task)
            frames.append(frame)
            message = frame if isinstance(frame, str) else message
    if message is not None:
        return tasks, message

    # Figure without pyplot: no global figure state, no interactive backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.6 * n_tasks, 3.4), layout="constrained")
    for i, (task, frame) in enumerate(zip(tasks, frames, strict=True)):
        axes = figure.add_subplot(1, n_tasks, i + 1)
        axes.imshow(frame)
        axes.set_axis_off()
        title = _title(task) if family else f"reset seed {seeds[i]}\n(not a task family)"
        axes.set_title(title, fontsize=6, loc="left")
    figure.suptitle(env_id, fontsize=9)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    with naming(out_png):
        figure.savefig(out_png, dpi=120)
    return tasks, None
