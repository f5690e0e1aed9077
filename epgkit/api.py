"""epgkit from Python: evolve a loss, test it, sweep a grid, and get objects back.

What the ``epgkit`` command does, for a notebook or a script: every call takes gin config files
and bindings as the CLI does (its keyword arguments are the CLI's flags, each sugar for a gin
binding recorded in the run's ``config.gin``), prints the same lines (to ``echo``), returns an
object, and raises instead of exiting::

    import epgkit.api as epg

    run = epg.evolve(["quickstart.gin", "debug.gin"], workers=0, run_dir="runs/try")
    run.metrics()[-1]["fitness_mean"], run.best_loss
    summary = epg.train(run.path, runs=4, baselines=["ppo"], workers=0)
    summary.methods["epg"]["final_iqm"]

Mistakes a user can fix raise ``ConfigError`` (``epgkit.errors``), ``RunDirError``,
``PathError`` or ``KeyError``; a run that stops part-way raises ``RunStopped`` saying how to
resume it. Importing this module imports neither torch nor Dask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epgkit.errors import ConfigError

__all__ = ["Run", "RunStopped", "Summary", "SweepResult", "evolve", "sweep", "train", "where"]

Echo = Callable[[str], None]


class RunStopped(RuntimeError):
    """A run that stopped part-way (a lost cluster, an OS error); says how to resume it."""


@dataclass(frozen=True)
class Run:
    """A run directory written by ``evolve``."""

    path: Path

    def metrics(self) -> list[dict[str, Any]]:
        """One dict per finished epoch (``metrics.jsonl``)."""
        from epgkit.run.rundir import METRICS, jsonl_rows

        return [row for _, row in jsonl_rows(self.path / METRICS)]

    @property
    def best_loss(self) -> Path | None:
        """The best unguided epoch's φ (None while every epoch was guided)."""
        from epgkit.run.rundir import BEST_LOSS

        return self.path / BEST_LOSS if (self.path / BEST_LOSS).is_file() else None

    @property
    def config(self) -> str:
        """Every binding of the run (``config.gin``)."""
        return (self.path / "config.gin").read_text()


@dataclass(frozen=True)
class Summary:
    """A test-time training: its output directory and ``summary.json``."""

    path: Path
    data: dict[str, Any]

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        """Method name → its statistics (``final_iqm``, ``final_mean``, ``finals``, ...)."""
        return self.data["methods"]

    def table(self) -> str:
        """The summary as the CLI prints it."""
        from epgkit.run.train_summary import table

        return table(self.data)


@dataclass(frozen=True)
class SweepResult:
    """A sweep directory, its summary rows (one per point) and their table as the CLI prints
    it."""

    path: Path
    rows: list[Any]
    table: str


def where(
    workers: int | None = None,
    scheduler: str | None = None,
    dashboard: bool = False,
    run_dir: str | Path | None = None,
    wandb: str | None = None,
) -> list[str]:
    """The gin bindings that say where a run happens (the CLI's ``--workers``, ``--scheduler``,
    ``--dashboard``, ``--run-dir``/``--out`` and ``--wandb``); None leaves the config's choice.

    ``workers=0`` runs in this process (``Launch.cluster = @InProcess()``), ``workers=N`` on a
    local cluster of N processes, ``scheduler`` on a running Dask scheduler (not both).
    """
    out = []
    if workers is not None and scheduler is not None:
        raise ConfigError(
            "--workers starts local workers and --scheduler uses a running cluster's: give one"
        )
    if workers is not None:
        if workers < 0:
            raise ConfigError(f"--workers must be ≥ 0, got {workers}")
        if workers == 0:
            out.append("Launch.cluster = @InProcess()")
        else:
            out += ["Launch.cluster = @LocalCluster()", f"LocalCluster.workers = {workers}"]
    if scheduler is not None:
        out += ["Launch.cluster = @Scheduler()", f"Scheduler.address = {scheduler!r}"]
    if dashboard:
        if scheduler is not None or workers == 0:
            raise ConfigError(
                "--dashboard shows the dashboard of a local Dask cluster; with --scheduler, "
                "open the scheduler's own, and --workers 0 starts no cluster"
            )
        out.append("LocalCluster.dashboard = True")
    if run_dir is not None:
        out.append(f"Launch.run_dir = {str(run_dir)!r}")
    if wandb is not None:  # recorded with the run, so a resumed run logs on
        out.append(f"Launch.wandb = {wandb!r}")
    return out


def _check_dashboard(cluster: Any) -> None:
    """Refuses ``--dashboard`` when the config's cluster serves none (a gin file chose SLURM,
    say), which would otherwise be ignored in silence."""
    if not getattr(cluster, "dashboard", False):
        raise ConfigError(
            f"--dashboard shows the dashboard of a local Dask cluster, but this run's config "
            f"runs on {cluster.describe()}; drop the flag, or choose --workers N"
        )


def _wandb(launch: Any) -> Any:
    from epgkit.run.wandb_log import WandbOptions

    return WandbOptions(launch.wandb) if launch.wandb else None


def _stopped(err: BaseException, resume: str) -> RunStopped:
    from epgkit.run.paths import describe

    return RunStopped(f"{describe(err) if isinstance(err, OSError) else err}. {resume}")


def evolve(
    configs: Sequence[str | Path] = (),
    bindings: Sequence[str] = (),
    *,
    run_dir: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    dashboard: bool = False,
    seed: int | None = None,
    resume: str | Path | None = None,
    init_loss: str | Path | None = None,
    wandb: str | None = None,
    echo: Echo = print,
) -> Run:
    """Evolves a learned loss (Algorithm 1), or continues the run in ``resume``.

    Args:
        configs: Gin files, applied in order (none with ``resume``).
        bindings: Gin bindings applied after them.
        run_dir, workers, scheduler, dashboard: Where the run happens and is written
            (``where``); ``seed``: ``Experiment.seed``.
        resume: A run directory to continue from its last complete epoch.
        init_loss: ``Experiment.init_loss``: a run directory, loss file or ``zoo:NAME``
            whose φ (of this run's loss architecture) starts the ES.
        wandb: Also log to this Weights & Biases project (offline unless ``WANDB_MODE``).
        echo: Where the run's lines go.
    """
    from epgkit.method.user_code import UserCodeError
    from epgkit.run.cluster import SchedulerLost
    from epgkit.run.launch import prepare, run_evolution
    from epgkit.run.progress import Progress
    from epgkit.run.tracking import track_evolution

    flags = where(workers, scheduler, dashboard, run_dir, wandb)
    if seed is not None:
        flags.append(f"Experiment.seed = {seed!r}")
    if init_loss is not None:
        flags.append(f"Experiment.init_loss = {str(init_loss)!r}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    resumed = None if resume is None else str(resume)
    with prepare([str(c) for c in configs], [*bindings, *flags], resumed) as prepared:  # locked
        if prepared.finished:  # nothing to run, so nothing is written either
            echo(f"epgkit: {prepared.run.path} has done all its {prepared.exp.epochs} epochs; "
                 f"nothing to do (to add epochs: epgkit evolve --resume {prepared.run.path} "
                 f"-b 'Experiment.epochs = N')")  # fmt: skip
            return Run(prepared.run.path)
        if dashboard:
            _check_dashboard(prepared.launch.where())
        with (
            prepared.launch.start() as executor,
            Progress(echo) as progress,
            track_evolution(prepared, progress, _wandb(prepared.launch)) as tracker,
        ):
            again = f"`epgkit evolve --resume {prepared.run.path}`"
            try:
                run_evolution(prepared, tracker.wrap(executor), tracker.echo, tracker.epoch)
            except (SchedulerLost, OSError) as err:
                if not (prepared.run.path / "config.gin").is_file():
                    raise  # stopped while making the run directory: there is nothing to resume
                raise _stopped(err, f"Every finished epoch is checkpointed: continue with "
                               f"{again}") from None  # fmt: skip
            except UserCodeError as err:
                raise UserCodeError(f"{err}. Every finished epoch is checkpointed: once it is "
                                    f"fixed, continue with {again}") from err  # fmt: skip
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (sigterm_unwinds)
                if (prepared.run.path / "config.gin").is_file():
                    tracker.echo(f"epgkit: stopped; every finished epoch is checkpointed: "
                                 f"continue with {again}")  # fmt: skip
                raise
    return Run(prepared.run.path)


def train(
    source: str | Path,
    bindings: Sequence[str] = (),
    *,
    env: str | None = None,
    steps: int | None = None,
    runs: int | None = None,
    seed: int | None = None,
    baselines: Sequence[str] = (),
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    wandb: str | None = None,
    echo: Echo = print,
) -> Summary:
    """Trains fresh policies with an evolved loss on held-out tasks, against baselines.

    Args:
        source: A run directory (its best loss), a loss file, or ``zoo:NAME``.
        bindings: Gin bindings on top of the loss's recorded config.
        env, steps, runs, seed, baselines: ``TestTime``'s fields (None keeps the default).
        out: The output directory (``Launch.run_dir``; default ``RUN/train/<time>``).
        workers, scheduler: Where it runs (``where``).
        wandb: Also log to this Weights & Biases project.
        echo: Where the lines go.
    """
    from epgkit.run.progress import Progress
    from epgkit.run.tracking import track_training
    from epgkit.run.train_launch import prepare_training, run_training

    test = {"env_id": env, "steps": steps, "runs": runs, "seed": seed}
    flags = [f"TestTime.{k} = {v!r}" for k, v in test.items() if v is not None]
    if baselines:
        flags.append(f"TestTime.baselines = {tuple(baselines)!r}")
    flags += where(workers, scheduler, run_dir=out, wandb=wandb)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    training = prepare_training(str(source), [*bindings, *flags])
    total = len(training.loops) * training.test.runs
    ops = training.source.meta["operative_config"]  # the loss's, shown with the training
    with (
        training,  # holds the output directory's lock
        training.launch.start() as executor,
        Progress(echo) as progress,
        track_training(training.out, progress, total, _wandb(training.launch), ops) as tracker,
    ):
        summary = run_training(training, tracker.wrap(executor), tracker.echo)
        tracker.summary(summary)
    return Summary(training.out, json.loads((training.out / "summary.json").read_text()))


def sweep(
    configs: Sequence[str | Path],
    grids: Sequence[str],
    bindings: Sequence[str] = (),
    *,
    samples: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    wandb: str | None = None,
    echo: Echo = print,
) -> SweepResult:
    """Evolves every point of a hyperparameter grid (or resumes the same sweep).

    Args:
        configs: Gin files shared by every point.
        grids: A binding and its values each, e.g. ``"OpenES.sigma=[0.02, 0.05]"``.
        bindings: Gin bindings shared by every point.
        samples: Run only this many points of the product, drawn with ``seed``.
        out: The sweep directory (default ``runs/<config>/sweep-<hash>``).
        workers, scheduler: Where every point runs, on one cluster (``where``).
        wandb: Also log every point to this Weights & Biases project, grouped.
        echo: Where the lines go.
    """
    from epgkit.run import sweep as sw
    from epgkit.run import sweep_plan, sweep_summary
    from epgkit.run.cluster import SchedulerLost
    from epgkit.run.progress import Progress

    if seed < 0:
        raise ConfigError(f"--seed must be ≥ 0, got {seed}")
    plan = sweep_plan.plan([str(c) for c in configs], list(grids), list(bindings), samples, seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    flags = where(workers, scheduler, wandb=wandb)
    with (
        # sweep.json is written once the cluster is reached too: a refused start leaves no trace
        sw.open_sweep(plan, None if out is None else str(out), flags, record=False) as opened,
        opened.launch.start() as executor,
        Progress(echo) as progress,
    ):
        try:
            _wandb(opened.launch)  # refused in one line now if wandb is not installed
            rows = sw.run_sweep(opened, executor, progress)
        except (SchedulerLost, OSError) as err:
            raise _stopped(err, "Finished points and epochs are kept: re-run the same command "
                           "to resume") from None  # fmt: skip
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (sigterm_unwinds)
            progress.echo("epgkit: stopped; finished points and epochs are kept: re-run the "
                          "same command to resume")  # fmt: skip
            raise
    return SweepResult(opened.path, rows, sweep_summary.table(opened, rows))
