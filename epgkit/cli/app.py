"""The ``epgkit`` typer app and what every command shares: its options, and error handling.

User mistakes (bad config, unknown names, bad values, an existing run directory, an output path
that cannot be written, an unreachable scheduler) print one message and exit with code 2;
``--debug`` shows the traceback. What a right command cannot do on this machine (render without
a GL backend) or fails to finish (a lost cluster, a full disk) exits with code 1, in one line,
and so does the user's own env or loss failing (one line naming it and its error).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evolved Policy Gradients: evolve learned RL losses and test them.",
)

USAGE_ERROR = 2


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"epgkit {version('epgkit')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Evolved Policy Gradients: evolve learned RL losses and test them."""


Bindings = Annotated[
    list[str] | None,
    typer.Option(
        "--binding", "-b", help="A gin binding, e.g. -b 'OpenES.sigma = 0.02' (repeatable)."
    ),
]
Debug = Annotated[bool, typer.Option(help="Show tracebacks of user errors.")]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="Address of a running Dask scheduler, tcp://HOST:PORT "
        "(Launch.cluster = @Scheduler(), Scheduler.address)."
    ),
]
Wandb = Annotated[
    bool,
    typer.Option(
        "--wandb", help="Also log to Weights & Biases (offline unless WANDB_MODE is set)."
    ),
]
WandbProject = Annotated[
    str | None,
    typer.Option(help="The wandb project (Launch.wandb; implies --wandb) [default: epgkit]."),
]


def wandb_logging(use: bool, project: str | None) -> str | None:
    """The project of ``--wandb``/``--wandb-project``: either flag turns logging on."""
    return project if project is not None else ("epgkit" if use else None)


Source = Annotated[
    str, typer.Argument(help="A run directory (its best loss), a loss file, or zoo:NAME.")
]


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turns the errors a user can fix into one line on stderr and exit code 2."""
    from gymnasium.error import Error as GymError

    from epgkit.api import RunStopped
    from epgkit.errors import ConfigError
    from epgkit.method.user_code import UserCodeError
    from epgkit.run.cluster import SchedulerLost, SchedulerUnreachable
    from epgkit.run.paths import PathError, describe
    from epgkit.run.rundir import RunDirError

    try:
        yield
    except (SchedulerLost, RunStopped, UserCodeError) as err:  # no traceback helps these
        if debug:
            raise
        typer.echo(f"epgkit: error: {err}", err=True)
        raise typer.Exit(1) from None
    except OSError as err:  # the machine's doing (a full disk): the path and the reason
        if debug:
            raise
        typer.echo(f"epgkit: error: {describe(err)}", err=True)
        raise typer.Exit(1) from None
    except (ConfigError, RunDirError, PathError, SchedulerUnreachable, GymError, KeyError) as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        typer.echo(f"epgkit: error: {message}", err=True)
        raise typer.Exit(USAGE_ERROR) from None


def cannot(message: str) -> NoReturn:
    """Exit code 1 with one line: the command was right but could not be done here (no GL
    backend, an env that cannot render); not a user mistake, so not code 2."""
    typer.echo(f"epgkit: error: {message}", err=True)
    raise typer.Exit(1)


def physics_only() -> None:
    """For commands that never render (evolve, train, sweep): a ``MUJOCO_GL`` backend that
    cannot load would break ``import mujoco`` itself, so run without one; Dask workers started
    after this inherit the setting."""
    if "MUJOCO_GL" not in os.environ:  # mujoco loads no backend then; envshow would pick EGL
        return
    from epgkit.tools.envshow import mujoco_gl_problem

    if problem := mujoco_gl_problem():
        backend = os.environ.get("MUJOCO_GL")
        typer.echo(f"epgkit: note: MUJOCO_GL={backend!r} cannot be loaded ({problem}); "
                   "running without rendering", err=True)  # fmt: skip
        os.environ["MUJOCO_GL"] = "disable"


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` as Ctrl-C raises ``KeyboardInterrupt``, so that every
    ``finally`` runs: the run directory's lock is released, the Dask cluster stopped, wandb
    finished. (A kill that cannot be caught leaves a lock file that the next run takes over.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> NoReturn:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
