"""The ``epgkit`` command line. Every flag is sugar for a gin binding recorded in config.gin.

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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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
    str | None, typer.Option(help="Address of a running Dask scheduler, tcp://HOST:PORT.")
]
Wandb = Annotated[
    bool,
    typer.Option(
        "--wandb", help="Also log to Weights & Biases (offline unless WANDB_MODE is set)."
    ),
]
WandbProject = Annotated[str, typer.Option(help="The wandb project.")]


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turns the errors a user can fix into one line on stderr and exit code 2."""
    from gymnasium.error import Error as GymError

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


class RunStopped(RuntimeError):
    """A run that stopped part-way (a lost cluster, an OS error); says how to resume it."""


def _cannot(message: str) -> NoReturn:
    """Exit code 1 with one line: the command was right but could not be done here (no GL
    backend, an env that cannot render); not a user mistake, so not code 2."""
    typer.echo(f"epgkit: error: {message}", err=True)
    raise typer.Exit(1)


def _physics_only() -> None:
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
def _sigterm_unwinds() -> Iterator[None]:
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


def _provenance(meta: dict) -> str:
    """Which φ a loss file holds, as ``evolve`` recorded it (``epoch`` counts ES steps)."""
    if "epoch" not in meta:
        return ""
    fitness = meta.get("fitness_mean")
    scored = "" if fitness is None else f", mean fitness {fitness:.2f} in the best unguided epoch"
    return f" (φ after {meta['epoch']} ES steps{scored})"


def _check_workers(workers: int | None) -> None:
    from epgkit.errors import ConfigError

    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {workers}")


def _check_seed(seed: int) -> None:
    from epgkit.errors import ConfigError

    if seed < 0:
        raise ConfigError(f"--seed must be ≥ 0, got {seed}")


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
    scheduler: Scheduler = None,
    seed: Annotated[int | None, typer.Option(help="Root seed of the run.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue the run in this directory from its last complete epoch."),
    ] = None,
    use_wandb: Wandb = False,
    wandb_project: WandbProject = "epgkit",
    debug: Debug = False,
) -> None:
    """Evolve a learned loss (Algorithm 1)."""
    with user_errors(debug), _sigterm_unwinds():
        _physics_only()
        _evolve(configs or [], binding or [], run_dir, workers, scheduler, seed, resume,
                wandb_project if use_wandb else None)  # fmt: skip


def _evolve(
    configs: list[str],
    bindings: list[str],
    run_dir: str | None,
    workers: int | None,
    scheduler: str | None,
    seed: int | None,
    resume: str | None,
    wandb_project: str | None,
) -> None:
    from epgkit.method.user_code import UserCodeError
    from epgkit.run.cluster import SchedulerLost, connect
    from epgkit.run.launch import flag_bindings, prepare, run_evolution
    from epgkit.run.paths import describe
    from epgkit.run.progress import Progress
    from epgkit.run.tracking import track_evolution
    from epgkit.run.wandb_log import WandbOptions

    _check_workers(workers)
    flags = flag_bindings(workers=workers, scheduler=scheduler, seed=seed, run_dir=run_dir)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    wandb = WandbOptions(wandb_project) if wandb_project else None
    with (
        prepare(configs, [*bindings, *flags], resume) as prepared,  # holds the run's lock
        connect(prepared.exp.n_workers, prepared.exp.scheduler, prepared.exp.connect_timeout,
                prepared.exp.worker_timeout) as executor,
        Progress(typer.echo) as progress,
        track_evolution(prepared, progress, wandb) as tracker,
    ):  # fmt: skip
        try:
            run_evolution(prepared, tracker.wrap(executor), tracker.echo)
        except (SchedulerLost, OSError) as err:
            if not (prepared.run.path / "config.gin").is_file():
                raise  # stopped while making the run directory: there is nothing to resume
            reason = describe(err) if isinstance(err, OSError) else str(err)
            raise RunStopped(
                f"{reason}. Every finished epoch is checkpointed: continue with "
                f"`epgkit evolve --resume {prepared.run.path}`"
            ) from None
        except UserCodeError as err:
            raise UserCodeError(
                f"{err}. Every finished epoch is checkpointed: once it is fixed, continue with "
                f"`epgkit evolve --resume {prepared.run.path}`"
            ) from err


@app.command()
def train(
    source: Annotated[
        str, typer.Argument(help="A run directory (its best loss), a loss file, or zoo:NAME.")
    ],
    env: Annotated[str | None, typer.Option(help="Test on another env id (same spaces).")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Held-out tasks, one inner loop each.")] = 20,
    steps: Annotated[int | None, typer.Option(help="Env steps U of each run.")] = None,
    baseline: Annotated[
        list[str] | None, typer.Option(help="Also train with this baseline (repeatable): ppo, ...")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output directory.")] = None,
    binding: Bindings = None,
    workers: Annotated[int | None, typer.Option(help="Local Dask workers; 0 in-process.")] = None,
    scheduler: Scheduler = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out tasks and runs.")] = 0,
    use_wandb: Wandb = False,
    wandb_project: WandbProject = "epgkit",
    debug: Debug = False,
) -> None:
    """Train fresh policies with an evolved loss on held-out tasks, against baselines."""
    with user_errors(debug):
        _physics_only()
        _train(source, env, runs, steps, baseline or [], out, binding or [], workers, scheduler,
               seed, wandb_project if use_wandb else None)  # fmt: skip


def _train(
    source_arg: str,
    env: str | None,
    runs: int,
    steps: int | None,
    baselines: list[str],
    out_arg: str | None,
    bindings: list[str],
    workers: int | None,
    scheduler: str | None,
    seed: int,
    wandb_project: str | None,
) -> None:
    from epgkit.run import preflight
    from epgkit.run import train as tt
    from epgkit.run.cluster import connect
    from epgkit.run.launch import flag_bindings
    from epgkit.run.paths import check_dir
    from epgkit.run.progress import Progress
    from epgkit.run.rundir import RunDirError
    from epgkit.run.tracking import track_training
    from epgkit.run.wandb_log import WandbOptions

    _check_workers(workers)
    _check_seed(seed)
    source = tt.load_source(source_arg)
    flags = flag_bindings(workers=workers, scheduler=scheduler)
    exp = tt.build(source, [*bindings, *flags])
    loops = tt.methods(exp, baselines, env, steps)
    tt.check_fits(loops[tt.LEARNED], source)
    preflight.check_training(exp, loops, tt.LEARNED, source.phi, runs)
    if out_arg is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(source_arg) if Path(source_arg).is_dir() else Path("runs")
        out_arg = str(base / "train" / stamp)
    out = Path(out_arg)
    check_dir(out, "--out")
    if (out / "summary.json").exists():
        raise RunDirError(f"{out} already holds a test-time training; choose another --out")
    learned = loops[tt.LEARNED]
    started = time.perf_counter()
    jobs = tt.test_jobs(source.phi, runs, seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    wandb = WandbOptions(wandb_project) if wandb_project else None
    with (
        connect(exp.n_workers, exp.scheduler, exp.connect_timeout,
                exp.worker_timeout) as executor,
        Progress(typer.echo) as progress,
        track_training(out, progress, len(loops) * runs, wandb,
                       source.meta["operative_config"]) as tracker,
    ):  # fmt: skip
        tracker.echo(
            f"epgkit: test-time training on {learned.env_id} with {learned.policy!r}: {runs} "
            f"held-out tasks × {', '.join(loops)}, U={learned.steps} steps each → {out}"
        )
        tracker.echo(f"loss: {source.path}{_provenance(source.meta)}")
        results = tt.run_methods(loops, jobs, exp.batch_size, tracker.wrap(executor))
        info = {"source": str(source.path), "env_id": learned.env_id, "runs": runs, "seed": seed,
                "evolved_on": source.meta.get("env_id"), "source_epoch": source.meta.get("epoch"),
                "wall_s": time.perf_counter() - started}  # fmt: skip
        summary = tt.write_outputs(out, loops, results, info)
        tracker.summary(summary)
        tracker.echo(tt.table(summary))
        tracker.echo(f"done in {info['wall_s']:.0f} s: {out / 'summary.json'}, returns.png, kl.png")


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
    wandb_project: WandbProject = "epgkit",
    debug: Debug = False,
) -> None:
    """Evolve every point of a hyperparameter grid; re-run the same command to resume."""
    with user_errors(debug), _sigterm_unwinds():
        _physics_only()
        _sweep(configs or [], grid or [], binding or [], samples, seed, out, workers, scheduler,
               wandb_project if use_wandb else None)  # fmt: skip


def _sweep(
    configs: list[str],
    grids: list[str],
    bindings: list[str],
    samples: int | None,
    seed: int,
    out: str | None,
    workers: int | None,
    scheduler: str | None,
    wandb_project: str | None,
) -> None:
    from epgkit.run import sweep as sw
    from epgkit.run import sweep_plan, sweep_summary
    from epgkit.run.cluster import SchedulerLost, connect
    from epgkit.run.launch import flag_bindings
    from epgkit.run.paths import describe
    from epgkit.run.progress import Progress
    from epgkit.run.wandb_log import WandbOptions

    _check_workers(workers)
    _check_seed(seed)
    plan = sweep_plan.plan(configs, grids, bindings, samples, seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    wandb = WandbOptions(wandb_project) if wandb_project else None
    flags = flag_bindings(workers=workers, scheduler=scheduler)
    with (
        # sweep.json is written once the cluster is reached too: a refused start leaves no trace
        sw.open_sweep(plan, out, flags, record=False) as sweep,
        connect(sweep.workers, sweep.scheduler, sweep.timeout, sweep.worker_timeout) as executor,
        Progress(typer.echo) as progress,
    ):
        try:
            rows = sw.run_sweep(sweep, executor, progress, wandb)
        except (SchedulerLost, OSError) as err:
            reason = describe(err) if isinstance(err, OSError) else str(err)
            raise RunStopped(
                f"{reason}. Finished points and epochs are kept: re-run the same command to resume"
            ) from None
    typer.echo(sweep_summary.table(sweep, rows))


@app.command()
def plot(
    run_dirs: Annotated[list[str], typer.Argument(help="Run directories to compare.")],
    out: Annotated[str | None, typer.Option(help="PNG to write.")] = None,
    debug: Debug = False,
) -> None:
    """Plot ES fitness against epoch for one or several runs (Figure 20 style)."""
    from epgkit.run.paths import check_file, exists
    from epgkit.run.plotting import plot_fitness
    from epgkit.run.rundir import METRICS, RunDirError

    with user_errors(debug):
        for d in run_dirs:
            if not (exists(d, "run directory") and (Path(d) / METRICS).is_file()):
                raise RunDirError(f"{d}: not an epgkit run directory (no {METRICS})")
        target = out or (str(Path(run_dirs[0]) / "plots" / "fitness.png") if len(run_dirs) == 1
                         else "fitness.png")  # fmt: skip
        check_file(target, "--out")
        typer.echo(str(plot_fitness(run_dirs, target)))


@app.command()
def render(
    source: Annotated[
        str, typer.Argument(help="A run directory (its best loss), a loss file, or zoo:NAME.")
    ],
    env: Annotated[str | None, typer.Option(help="Another env id with the same spaces.")] = None,
    out: Annotated[str, typer.Option(help="GIF to write.")] = "policy.gif",
    seed: Annotated[int, typer.Option(help="Seed of the held-out task.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Env steps U of training.")] = None,
    max_steps: Annotated[int, typer.Option(help="Longest episode to render.")] = 300,
    binding: Bindings = None,
    debug: Debug = False,
) -> None:
    """Train a fresh policy with the loss on a held-out task, then render an episode of it."""
    from epgkit.run import train as tt
    from epgkit.run.paths import check_file
    from epgkit.tools.envshow import mujoco_gl_problem
    from epgkit.tools.render import render_episode, render_problem

    with user_errors(debug):
        check_file(out, "--out")
        mujoco_gl_problem()  # before the env is built: a broken GL backend breaks `import mujoco`
        source_ = tt.load_source(source)
        loops = tt.methods(tt.build(source_, binding or []), [], env, steps)
        tt.check_fits(loops[tt.LEARNED], source_)
        inner = loops[tt.LEARNED]
        (job,) = tt.test_jobs(source_.phi, 1, seed)
        # Checked before training, which may take long, to produce a GIF that cannot be made.
        if problem := render_problem(inner, job.task_seed):
            _cannot(problem)
        (result,) = inner.run([job], keep_policy=True)
        total, reason = render_episode(inner, result.policy, job.task_seed, out, max_steps)
    typer.echo(
        f"trained on task {job.task_seed} of {inner.env_id} for {inner.steps:,} steps: final "
        f"return {result.fitness:.2f}; rendered episode return {total:.2f}"
    )
    if reason:
        _cannot(reason)
    typer.echo(f"wrote {out}")


envs_app = typer.Typer(no_args_is_help=True, help="Look at the task families.")
app.add_typer(envs_app, name="envs")


@envs_app.command("show")
def envs_show(
    env_id: Annotated[str, typer.Argument(help="A registered env id, e.g. epgkit/RandomHopper-v0")],
    tasks: Annotated[int, typer.Option(min=1, help="How many tasks to sample.")] = 4,
    out: Annotated[str | None, typer.Option(help="PNG to write.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampled tasks.")] = 0,
    debug: Debug = False,
) -> None:
    """Render one frame per sampled task into a PNG and print each task's parameters."""
    import json

    from epgkit.envs.ids import takes_task_seed
    from epgkit.run.paths import check_file
    from epgkit.tools.envshow import show_tasks

    with user_errors(debug):
        target = Path(out or f"{env_id.replace('/', '_').replace(':', '_')}_tasks.png")
        check_file(target, "--out")
        task_list, message = show_tasks(env_id, tasks, target, seed=seed)
        family = takes_task_seed(env_id)
    for task in task_list:
        typer.echo(json.dumps(task))
    if not family:
        typer.echo(f"{env_id} is not a task family (it takes no task_seed): each frame is a reset "
                   "with another seed")  # fmt: skip
    typer.echo(message if message else f"wrote {target}")


LIST_KINDS = {"losses": "loss", "policies": "policy", "strategies": "strategy"}


@app.command("list")
def list_(
    what: Annotated[
        str | None,
        typer.Argument(help="losses, policies, strategies, envs, configs or zoo (default: all)."),
    ] = None,
    modules: Annotated[
        list[str] | None,
        typer.Option(
            "--import", help="Import this module first, to list what it registers (repeatable)."
        ),
    ] = None,
) -> None:
    """List the registered components, environments and shipped configs."""
    import importlib

    from epgkit.components import registered
    from epgkit.errors import ConfigError
    from epgkit.method.user_code import describe
    from epgkit.run.config import available

    kinds = ["losses", "policies", "strategies", "envs", "configs", "zoo"]
    with user_errors(False):
        if what is not None and what not in kinds:
            raise ConfigError(f"cannot list {what!r}; choose one of {', '.join(kinds)}")
        for module in modules or []:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ConfigError(f"--import {module}: cannot be imported ({err})") from None
            except Exception as err:  # noqa: BLE001  (whatever the user's module raises)
                raise ConfigError(
                    f"--import {module}: the module raised an error when imported: {describe(err)}"
                ) from None
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
        elif kind == "zoo":
            from epgkit.run.zoo import entries

            for name, entry in entries().items():
                typer.echo(f"  zoo:{name:<24} {entry['env_id']}  {entry['summary']}")
        else:
            for name in available():
                typer.echo(f"  {name}")


analyze_app = typer.Typer(
    no_args_is_help=True,
    help="Look inside a learned loss during test-time training (Section 4.3, Appendix B).",
)
app.add_typer(analyze_app, name="analyze")
_Source = Annotated[
    str, typer.Argument(help="A run directory (its best loss), a loss file, or zoo:NAME.")
]
_Env = Annotated[str | None, typer.Option(help="Test on another env id (same spaces).")]
_Runs = Annotated[int, typer.Option(min=1, help="Held-out tasks, one inner loop each.")]
_Steps = Annotated[int | None, typer.Option(help="Env steps U of each run.")]
_Out = Annotated[
    str | None,
    typer.Option(help="Output folder (default: RUN_DIR/analyze/<time> or runs/analyze/<time>)."),
]
_Seed = Annotated[int, typer.Option(help="Seed of the held-out tasks and runs (as in train).")]


def _analyze(kind: str, source: str, env: str | None, runs: int, steps: int | None,
             out: str | None, seed: int, bindings: list[str], debug: bool) -> None:  # fmt: skip
    import torch

    from epgkit.tools import analyze

    torch.set_num_threads(1)
    with user_errors(debug):
        _physics_only()
        study = analyze.prepare(kind, source, env, runs, steps, out, seed, bindings)
        typer.echo(f"epgkit: {kind} of {study.source.path}{_provenance(study.source.meta)} on "
                   f"{study.learned.env_id}: {runs} held-out tasks, U={study.learned.steps} "
                   f"steps each → {study.out}")  # fmt: skip
        data = analyze.run(kind, study)
    typer.echo(analyze.headline(kind, data))
    typer.echo(f"wrote {study.out / (kind + '.png')} and {kind}.json")


@analyze_app.command("sensitivity")
def analyze_sensitivity(source: _Source, env: _Env = None, runs: _Runs = 3, steps: _Steps = None,
                        out: _Out = None, seed: _Seed = 0, binding: Bindings = None,
                        debug: Debug = False) -> None:  # fmt: skip
    """‖∂L/∂x‖ of the loss per input and row of its window, as a heatmap (Figure 21)."""
    _analyze("sensitivity", source, env, runs, steps, out, seed, binding or [], debug)


@analyze_app.command("gradients")
def analyze_gradients(source: _Source, env: _Env = None, runs: _Runs = 3, steps: _Steps = None,
                      out: _Out = None, seed: _Seed = 0, binding: Bindings = None,
                      debug: Debug = False) -> None:  # fmt: skip
    """Spearman's ρ between the loss's and PPO's policy gradients, per update."""
    _analyze("gradients", source, env, runs, steps, out, seed, binding or [], debug)


@analyze_app.command("kl")
def analyze_kl(source: _Source, env: _Env = None, runs: _Runs = 3, steps: _Steps = None,
               out: _Out = None, seed: _Seed = 0, binding: Bindings = None,
               debug: Debug = False) -> None:  # fmt: skip
    """KL per update under the loss, PPO and the initial loss φ₀ (Figures 16, 22)."""
    _analyze("kl", source, env, runs, steps, out, seed, binding or [], debug)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
