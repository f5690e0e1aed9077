"""The ``epgkit`` command line (typer), a thin layer over ``epgkit.api``.

``app`` holds what every command shares (``epgkit.cli.app``); the commands register themselves
on it when their modules are imported here: ``runs`` (evolve, train, sweep, plot) and ``views``
(render, envs show, list, analyze).
"""

from __future__ import annotations

from epgkit.cli import runs, views  # noqa: F401  (their commands register on `app`, in order)
from epgkit.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point."""
    app()
