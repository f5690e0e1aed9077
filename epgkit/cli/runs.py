"""``epgkit evolve``, ``train``, ``sweep`` and ``plot``: flags to gin bindings, then
``epgkit.api``. Every flag is sugar for a binding recorded in the run's ``config.gin``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from epgkit.cli.app import (
    Bindings,
    Debug,
    Scheduler,
    Source,
    Wandb,
    WandbProject,
    app,
    physics_only,
    sigterm_unwinds,
    user_errors,
    wandb_logging,
)


@app.command()
def evolve(
    configs: Annotated[
        list[str] | None,
        typer.Argument(help="Gin files, applied in order (e.g. gin/quickstart.gin gin/debug.gin)."),
    ] = None,
    binding: Bindings = None,
    run_dir: Annotated[
        str | None, typer.Option(help="Run directory, Launch.run_dir (default: runs/...).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local Dask workers, LocalCluster.workers; 0 runs in-process "
            "(Launch.cluster = @InProcess()). Default: one per core."
        ),
    ] = None,
    scheduler: Scheduler = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Serve the local Dask cluster's dashboard (LocalCluster.dashboard; needs "
            "pip install 'epgkit\\[dashboard]').",
        ),
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Root seed of the run (Experiment.seed).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue the run in this directory from its last complete epoch."),
    ] = None,
    init_loss: Annotated[
        str | None,
        typer.Option(
            help="Start the ES from this loss's φ (a run directory, loss file or zoo:NAME of "
            "the same architecture) instead of a random one (Experiment.init_loss)."
        ),
    ] = None,
    use_wandb: Wandb = False,
    wandb_project: WandbProject = None,
    debug: Debug = False,
) -> None:
    """Evolve a learned loss (Algorithm 1)."""
    from epgkit import api

    with user_errors(debug), sigterm_unwinds():
        physics_only()
        api.evolve(configs or [], binding or [], run_dir=run_dir, workers=workers,
                   scheduler=scheduler, dashboard=dashboard, seed=seed, resume=resume,
                   init_loss=init_loss, wandb=wandb_logging(use_wandb, wandb_project),
                   echo=typer.echo)  # fmt: skip


@app.command()
def train(
    source: Source,
    env: Annotated[
        str | None, typer.Option(help="Test on another env id, same spaces (TestTime.env_id).")
    ] = None,
    runs: Annotated[
        int | None,
        typer.Option(
            min=1, help="Held-out tasks, one inner loop each (TestTime.runs; default 20)."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Env steps U of each run (TestTime.steps).")
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            help="Also train with this baseline, e.g. ppo (TestTime.baselines; repeatable)."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            help="Output directory, new or empty (Launch.run_dir; default: RUN_DIR/train/<time> "
            "or runs/train/<time>)."
        ),
    ] = None,
    binding: Bindings = None,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask workers (LocalCluster.workers); 0 in-process.")
    ] = None,
    scheduler: Scheduler = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the held-out tasks and runs (TestTime.seed; default 0)."),
    ] = None,
    use_wandb: Wandb = False,
    wandb_project: WandbProject = None,
    debug: Debug = False,
) -> None:
    """Train fresh policies with an evolved loss on held-out tasks, against baselines."""
    from epgkit import api

    with user_errors(debug), sigterm_unwinds():
        physics_only()
        api.train(source, binding or [], env=env, steps=steps, runs=runs, seed=seed,
                  baselines=baseline or [], out=out, workers=workers, scheduler=scheduler,
                  wandb=wandb_logging(use_wandb, wandb_project), echo=typer.echo)  # fmt: skip


@app.command()
def sweep(
    configs: Annotated[
        list[str] | None,
        typer.Argument(help="Gin files shared by every point, applied in order."),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            help="A binding and its values, e.g. --grid 'OpenES.sigma=[0.02, 0.05]' "
            "(repeatable; the points are the product of the grids).",
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Run only this many points of the product, at random.")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the --samples draw (runs keep Experiment.seed).")
    ] = 0,
    out: Annotated[
        str | None,
        typer.Option(help="Sweep directory (default: runs/<config>/sweep-<hash>)."),
    ] = None,
    binding: Bindings = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Local Dask workers shared by all points; 0 runs in-process."),
    ] = None,
    scheduler: Scheduler = None,
    use_wandb: Wandb = False,
    wandb_project: WandbProject = None,
    debug: Debug = False,
) -> None:
    """Evolve every point of a hyperparameter grid; re-run the same command to resume."""
    from epgkit import api

    with user_errors(debug), sigterm_unwinds():
        physics_only()
        result = api.sweep(configs or [], grid or [], binding or [], samples=samples, seed=seed,
                           out=out, workers=workers, scheduler=scheduler, echo=typer.echo,
                           wandb=wandb_logging(use_wandb, wandb_project))  # fmt: skip
    typer.echo(result.table)


@app.command()
def plot(
    run_dirs: Annotated[list[str], typer.Argument(help="Run directories to compare.")],
    out: Annotated[str | None, typer.Option(help="PNG to write.")] = None,
    debug: Debug = False,
) -> None:
    """Plot ES fitness against epoch for one or several runs (Figure 20 style)."""
    from contextlib import nullcontext

    from epgkit.run.lock import DirLock, check_outside_runs
    from epgkit.run.paths import check_file, exists, figure_suffixes
    from epgkit.run.plotting import plot_fitness
    from epgkit.run.rundir import METRICS, RunDirError

    with user_errors(debug):
        for d in run_dirs:
            if not (exists(d, "run directory") and (Path(d) / METRICS).is_file()):
                raise RunDirError(f"{d}: not an epgkit run directory (no {METRICS})")
        if len({Path(d).resolve() for d in run_dirs}) < len(run_dirs):
            raise RunDirError(f"a run directory is given twice: {' '.join(run_dirs)}")
        own = out is None and len(run_dirs) == 1  # the run's own plot, which evolve refreshes
        target = str(Path(run_dirs[0]) / "plots" / "fitness.png") if own else out or "fitness.png"
        check_file(target, "--out", figure_suffixes())
        if not own:
            check_outside_runs(Path(target).parent, "--out")
        # A run being evolved is refused (Busy names who holds it): one writer per run.
        with DirLock(run_dirs[0]) if own else nullcontext():
            typer.echo(str(plot_fitness(run_dirs, target)))
