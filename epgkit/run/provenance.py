"""Where a run came from, as ``meta.json`` records it: the commit of the code (and whether its
tracked files differ from it) and the versions of Python and the libraries results depend on."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=where, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(where: Path = Path(__file__).parent) -> dict[str, Any]:
    """The commit of the checkout at ``where`` (epgkit's own by default) and whether its
    tracked files differ from it; None outside a git checkout (e.g. installed from a wheel).
    A dirty tree means the sha alone cannot reproduce the run."""
    sha = _git(where, "rev-parse", "HEAD")
    changes = _git(where, "status", "--porcelain", "--untracked-files=no") if sha else None
    return {"git_sha": sha or None, "git_dirty": None if changes is None else bool(changes)}


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    import dask
    import gymnasium
    import mujoco

    import epgkit

    return {
        "python": platform.python_version(),
        "epgkit": epgkit.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "dask": dask.__version__,
    }
