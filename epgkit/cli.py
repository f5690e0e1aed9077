"""The ``epgkit`` command line. Every flag is sugar for a gin binding recorded in config.gin.

User mistakes (bad config, unknown names, bad values, an existing run directory, an
unreachable scheduler) print one message and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evolved Policy Gradients: evolve learned RL losses and test them.",
)

USAGE_ERROR = 2
Bindings = Annotated[
    list[str] | None,
    typer.Option(
        "--binding", "-b", help="A gin binding, e.g. -b 'OpenES.sigma = 0.02' (repeatable)."
    ),
]
Debug = Annotated[bool, typer.Option(help="Show tracebacks of user errors.")]


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turns the errors a user can fix into one line on stderr and exit code 2."""
    from gymnasium.error import Error as GymError

    from epgkit.cluster import SchedulerUnreachable
    from epgkit.config import ConfigError
    from epgkit.rundir import RunDirError

    try:
        yield
    except (ConfigError, RunDirError, SchedulerUnreachable, GymError, KeyError) as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        typer.echo(f"epgkit: error: {message}", err=True)
        raise typer.Exit(USAGE_ERROR) from None


@app.command()
def evolve(
    configs: Annotated[
        list[str] | None,
        typer.Argument(help="Gin files, applied in order (e.g. gin/quickstart.gin gin/debug.gin)."),
    ] = None,
    binding: Bindings = None,
    run_dir: Annotated[str | None, typer.Option(help="Run directory (default: runs/...).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Local Dask workers; 0 runs in-process (default: one per core)."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler, tcp://HOST:PORT.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Root seed of the run.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue the run in this directory from its last complete epoch."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Evolve a learned loss (Algorithm 1)."""
    with user_errors(debug):
        _evolve(configs or [], binding or [], run_dir, workers, scheduler, seed, resume)


def _evolve(
    configs: list[str],
    bindings: list[str],
    run_dir: str | None,
    workers: int | None,
    scheduler: str | None,
    seed: int | None,
    resume: str | None,
) -> None:
    from epgkit.cluster import connect
    from epgkit.config import ConfigError
    from epgkit.launch import flag_bindings, prepare, run_evolution

    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {workers}")
    flags = flag_bindings(workers=workers, scheduler=scheduler, seed=seed, run_dir=run_dir)
    prepared = prepare(configs, [*bindings, *flags], resume)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with connect(prepared.exp.n_workers, prepared.exp.scheduler) as executor:
        run_evolution(prepared, executor, typer.echo)


LIST_KINDS = {"losses": "loss", "policies": "policy", "strategies": "strategy"}


@app.command("list")
def list_(
    what: Annotated[
        str | None,
        typer.Argument(help="losses, policies, strategies, envs or configs (default: all)."),
    ] = None,
) -> None:
    """List the registered components, environments and shipped configs."""
    from epgkit.config import ConfigError, available
    from epgkit.registry import registered

    kinds = ["losses", "policies", "strategies", "envs", "configs"]
    with user_errors(False):
        if what is not None and what not in kinds:
            raise ConfigError(f"cannot list {what!r}; choose one of {', '.join(kinds)}")
    for kind in [what] if what else kinds:
        typer.echo(f"{kind}:")
        if kind in LIST_KINDS:
            for name, obj in registered(LIST_KINDS[kind]).items():
                doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
                typer.echo(f"  {name:<16} {doc}")
        elif kind == "envs":
            import gymnasium as gym

            from epgkit.envs import registered as envs

            for env_id in envs():
                entry = gym.spec(env_id).entry_point
                typer.echo(f"  {env_id:<32} {entry}")
        else:
            for name in available():
                typer.echo(f"  {name}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
