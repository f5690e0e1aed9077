"""The ``epgkit`` command line (typer), a thin layer over ``epgkit.api``.

``app`` holds what every command shares (``epgkit.cli.app``); the commands register themselves
on it when their modules are imported here: ``runs`` (evolve, train, sweep, plot) and ``looks``
(render, envs show, list, analyze).
"""

from __future__ import annotations

from epgkit.cli import looks, runs  # noqa: F401  (their commands register on `app`)
from epgkit.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point."""
    app()
