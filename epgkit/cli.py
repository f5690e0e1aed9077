"""The ``epgkit`` command line. Every flag is sugar for a gin binding recorded in config.gin.

User mistakes (bad config, unknown names, bad values, an existing run directory, an
unreachable scheduler) print one message and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


def _flag_bindings(**flags: object) -> list[str]:
    return [f"Experiment.{name} = {value!r}" for name, value in flags.items() if value is not None]


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
    import gin

    from epgkit import config
    from epgkit.cluster import connect
    from epgkit.evolve import evolve as run_evolution
    from epgkit.experiment import Experiment
    from epgkit.plotting import plot_fitness
    from epgkit.rundir import RunDir, RunDirError

    if resume is not None:
        run = RunDir(resume)
        if not (run.path / "config.gin").is_file():
            raise RunDirError(f"--resume {resume}: not an epgkit run directory (no config.gin)")
        if configs:
            raise config.ConfigError(
                "--resume takes its config from the run directory; give no config files"
            )
        configs = [str(run.path / "config.gin")]
        run_dir = str(run.path)
    elif not configs:
        raise config.ConfigError("give at least one config file, e.g. gin/quickstart.gin")
    if workers is not None and workers < 0:
        raise config.ConfigError(f"--workers must be ≥ 0, got {workers}")
    flags = _flag_bindings(workers=workers, scheduler=scheduler, seed=seed, run_dir=run_dir)
    paths = config.parse(configs, [*bindings, *flags])
    exp = config.build(Experiment)
    if exp.run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        exp_dir = Path("runs") / paths[0].stem / stamp
        gin.bind_parameter("Experiment.run_dir", str(exp_dir))
        exp = config.build(Experiment)
    dims = exp.inner.dims()  # fails on a bad env id before anything is written
    meta = {
        "env_id": exp.inner.env_id,
        "loss": type(exp.inner.loss).__name__,
        "phi_size": exp.inner.phi_size(),
        "operative_config": gin.operative_config_str(),
        "obs_dim": dims.obs_dim,
        "act_dim": dims.act_dim,
    }
    run = RunDir(exp.run_dir)
    if resume is None:
        run.create(gin.config_str(), [str(p) for p in paths])
    run.write_operative(gin.operative_config_str())
    where = scheduler or ("in-process" if exp.n_workers == 0 else f"{exp.n_workers} workers")
    typer.echo(
        f"epgkit: evolving {meta['loss']} (|φ| = {meta['phi_size']:,}) on "
        f"{exp.inner.env_id}: E={exp.epochs} W={exp.inner_loops} "
        f"V={exp.strategy.population} U={exp.inner.steps} on {where} → {run.path}"
    )
    started = time.perf_counter()

    def report(m: dict) -> None:
        elapsed = time.perf_counter() - started
        typer.echo(
            f"epoch {m['epoch'] + 1:>4}/{exp.epochs}  fitness {m['fitness_mean']:9.2f}"
            f" ± {m['fitness_std']:7.2f}  max {m['fitness_max']:9.2f}  "
            f"α {m['alpha']:.2f}  failed {m['failures']}  {m['wall_s']:5.1f} s  "
            f"({elapsed:5.0f} s total)"
        )
        plot_fitness([run.path], run.path / "plots" / "fitness.png")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with connect(exp.n_workers, exp.scheduler) as executor:
        run_evolution(exp, run, executor, report, meta)
    typer.echo(
        f"done in {time.perf_counter() - started:.0f} s; best loss: {run.path / 'best_loss.pt'}"
    )


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
