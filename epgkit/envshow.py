"""A picture of a task family: one rendered frame per task, tiled side by side into a PNG.

``show_tasks`` is how one checks by eye that a family's tasks really differ (Figure 4 of the
paper shows RandomHopper tasks this way). MuJoCo envs render offscreen; with no OpenGL backend
the tasks are still built and returned, with a one-line message instead of a PNG.
"""

from __future__ import annotations

import os

# Before anything imports mujoco: EGL renders headless here (Mesa's software EGL). gymnasium
# reads the variable again at render time, so this also holds if mujoco was imported earlier.
os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import epgkit.envs  # noqa: E402, F401  (registers the epgkit/ ids)

GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri (or libosmesa6 with MUJOCO_GL=osmesa)"


def _task_seeds(seed: int, n_tasks: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n_tasks)]


def _frame(env_id: str, task_seed: int, n_steps: int) -> tuple[dict[str, Any], np.ndarray | str]:
    """Build task ``task_seed``, take ``n_steps`` random steps and render; a string on failure."""
    env = gym.make(env_id, task_seed=task_seed, render_mode="rgb_array")
    try:
        task = epgkit.envs.task_of(env)
        env.reset(seed=task_seed)
        env.action_space.seed(task_seed)
        for _ in range(n_steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
        try:
            frame = env.render()
        except Exception as error:  # no GL shows as EGLError, FatalError, ImportError, ...
            return task, f"{type(error).__name__}: {error}".splitlines()[0]
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
    and takes a few random steps before its frame is taken.

    Args:
        env_id: A registered gymnasium id, e.g. ``"epgkit/RandomHopper-v0"``.
        n_tasks: How many tasks to build and show.
        out_png: Where to write the tiled PNG.
        seed: Seed from which the task seeds are derived.

    Returns:
        The task dicts, and None when the PNG was written or a one-line message saying why
        nothing could be rendered (no OpenGL backend); the tasks are returned either way.
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks={n_tasks} must be at least 1.")
    tasks, frames = [], []
    for task_seed in _task_seeds(seed, n_tasks):
        task, frame = _frame(env_id, task_seed, n_steps=10)
        tasks.append(task)
        frames.append(frame)
    errors = [frame for frame in frames if isinstance(frame, str)]
    if errors:
        backend = os.environ.get("MUJOCO_GL")
        return tasks, (
            f"no PNG: cannot render with MUJOCO_GL={backend!r} ({errors[0]}); "
            f"a headless Debian needs {GL_PACKAGES}."
        )

    # Figure without pyplot: no global figure state, no interactive backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.6 * n_tasks, 3.4), layout="constrained")
    for i, (task, frame) in enumerate(zip(tasks, frames, strict=True)):
        axes = figure.add_subplot(1, n_tasks, i + 1)
        axes.imshow(frame)
        axes.set_axis_off()
        axes.set_title(_title(task), fontsize=6, loc="left")
    figure.suptitle(env_id, fontsize=9)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    return tasks, None
