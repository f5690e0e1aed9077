"""epgkit: Evolved Policy Gradients as a config-driven framework (Houthooft et al., 2018)."""

from __future__ import annotations

import os as _os

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(
    _os.path.join(_root, "envs")
):
    # A source checkout: the task families live in the top-level `envs/` folder and import
    # as `epgkit.envs` (installed wheels map it through setuptools' package-dir instead).
    __path__.append(_root)  # noqa: F821

__version__ = "0.1.0"

from epgkit.registry import register  # noqa: E402

__all__ = ["register"]
