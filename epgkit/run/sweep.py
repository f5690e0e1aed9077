"""Running a sweep: its directory, and every point of its plan as an ordinary run.

Each point of a sweep is an ordinary run directory, built by ``launch.prepare`` and evolved by
``launch.run_evolution``: runnable, resumable (``epgkit evolve --resume``) and plottable on
its own, its bindings recorded in its ``config.gin``. The sweep directory holds the points,
``sweep.json`` (what the sweep is, so that re-running the same command resumes it and a
different one is refused), ``summary.csv``, ``summary.md``, ``fitness.png`` and ``log.txt``.

Re-running an interrupted sweep skips finished points (checkpoint epoch = Experiment.epochs),
resumes unfinished ones from their checkpoint and starts the others; since an epoch depends
only on the seed and the state before it, a resumed point ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gymnasium.error import Error as GymError

from epgkit.method.experiment import Experiment
from epgkit.method.user_code import UserCodeError
from epgkit.run import config, preflight
from epgkit.run.cluster import Executor, Launch, local_processes
from epgkit.run.launch import prepare, run_evolution
from epgkit.run.lock import LOCK, DirLock
from epgkit.run.paths import check_dir, naming
from epgkit.run.progress import Progress, log_to
from epgkit.run.rundir import CHECKPOINT, SWEEP_JSON, RunDir, RunDirError
from epgkit.run.sweep_plan import Plan, Point
from epgkit.run.sweep_summary import Row, summarize, write_summary
from epgkit.run.tracking import track_evolution
from epgkit.run.wandb_log import WandbOptions


@dataclass(frozen=True)
class Sweep:
    """A checked plan and its directory, whose lock it holds until ``close`` (use as ``with
    open_sweep(...) as sweep:``); ``launch`` says where its points run (one cluster for all,
    ``with sweep.launch.start() as executor:``)."""

    plan: Plan
    path: Path
    points: tuple[Point, ...]
    epochs: tuple[int, ...]
    flags: tuple[str, ...]
    launch: Launch
    lock: DirLock | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    def close(self) -> None:
        """Releases the sweep directory."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def point_dir(self, point: Point) -> Path:
        return self.path / point.name

    def create(self) -> None:
        """Writes ``sweep.json`` into a new sweep directory (``open_sweep`` has checked that an
        existing one holds this same sweep)."""
        spec = self.path / SWEEP_JSON
        if spec.is_file():
            return
        record = {
            **self.plan.identity(),
            "points": [{"name": q.name, "bindings": list(q.bindings)} for q in self.points],
        }
        with naming(spec):
            spec.write_text(json.dumps(record, indent=2) + "\n")


def default_out(p: Plan) -> Path:
    """``runs/<config>/<name>``: the same command always finds its own sweep again."""
    return Path("runs") / Path(p.configs[0]).stem / p.name()


def open_sweep(
    p: Plan, out: str | Path | None = None, flags: Sequence[str] = (), record: bool = True
) -> Sweep:
    """Checks every point's config, then starts ``out`` or checks it holds this same sweep.

    ``flags`` are bindings that do not change results (``Launch.cluster``, ``LocalCluster``'s):
    recorded in each new point's config.gin, not part of what makes the sweep.
    Nothing is written before every point's config passed; then the sweep directory is
    locked (``Busy`` if another process writes it) until the returned sweep is closed.
    ``record=False`` leaves ``sweep.json`` to ``run_sweep``, so that a sweep refused later (its
    cluster cannot be reached) leaves no trace once closed.
    """
    path = Path(out) if out is not None else default_out(p)
    p = _in_recorded_order(p, path / SWEEP_JSON)
    points = p.points()
    exps, checked = [], []  # checked: (inner loop, guided) whose env and loss ran
    launch = None
    for point in points:
        try:
            config.parse(p.configs, [*p.bindings, *flags, *point.bindings])
            if launch is None:  # one cluster serves every point: the first point's chooses it
                launch = config.build(Launch)
                launch = replace(launch, cluster=config.build(launch.where))
            local = local_processes(launch.where())
            exp = config.experiment()
            exps.append(exp)
            # Every point is checked before any runs; the env and loss run once per inner loop.
            if (exp.inner, exp.alpha(0) > 0) not in checked:
                checked.append((exp.inner, exp.alpha(0) > 0))
                preflight.check_experiment(exp, local)
            else:
                preflight.check_values(exp)
                dims = exp.inner.dims()
                preflight.check_memory(exp, dims, preflight.phi_size(exp.inner), local)
        except (config.ConfigError, GymError) as err:
            raise config.ConfigError(f"sweep point {point.name}: {err}") from None
        except UserCodeError as err:
            raise UserCodeError(f"sweep point {point.name}: {err}") from err
    check_dir(path, "--out")  # a file there, a read-only place, a name too long
    spec = path / SWEEP_JSON
    lock = DirLock(path).acquire()
    try:
        if spec.is_file():
            _check_same(path, json.loads(spec.read_text()), p)
            for point, exp in zip(points, exps, strict=True):
                _check_point(path / point.name, exp, flags, point.name)
        elif any(q.name != LOCK for q in path.iterdir()):
            raise RunDirError(f"{path} exists and is not a sweep directory (no {SWEEP_JSON})")
        epochs = tuple(e.epochs for e in exps)
        assert launch is not None  # a plan has at least one point
        sweep = Sweep(p, path, tuple(points), epochs, tuple(flags), launch, lock)
        if record:
            sweep.create()
    except BaseException:
        lock.release()
        raise
    return sweep


def _check_point(run_dir: Path, exp: Experiment, flags: Sequence[str], name: str) -> None:
    """Refuses a point's folder that holds a run of another experiment (one started there by
    hand, or another sweep's): resumed, it would be ranked as this point. Epochs aside: a
    point may have been resumed on past the sweep's."""
    if not (run_dir / "config.gin").is_file():
        return
    config.parse([], [(run_dir / "config.gin").read_text(), *flags])
    recorded = config.experiment()
    same = replace(recorded, epochs=1) == replace(exp, epochs=1)
    if not same:  # components of the user's that are not dataclasses compare by identity
        same = _shown(replace(recorded, epochs=1)) == _shown(replace(exp, epochs=1))
    if not same:
        raise RunDirError(
            f"sweep point {name}: {run_dir} holds a run of another experiment than this point's "
            "(started there by hand?); move it away, then run the sweep again"
        )


def _shown(exp: Experiment) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", repr(exp))


def _in_recorded_order(p: Plan, spec: Path) -> Plan:
    """``p`` with its grids in the order its sweep's ``sweep.json`` records: the same sweep
    given with its ``--grid`` flags in another order keeps its points' names (and a sampled
    sweep its points), so the finished ones are found. (``_check_same`` decides sameness.)"""
    try:
        recorded = list(json.loads(spec.read_text()).get("grid", {}))
    except (OSError, ValueError, AttributeError):
        return p
    if sorted(recorded) != sorted(a.binding for a in p.axes):
        return p
    return replace(p, axes=tuple(sorted(p.axes, key=lambda a: recorded.index(a.binding))))


def _check_same(path: Path, recorded: dict[str, Any], p: Plan) -> None:
    identity = p.identity()
    if recorded.get("configs") == list(p.configs):  # an older sweep.json: configs by path
        identity |= {"configs": list(p.configs), "bindings": list(p.bindings)}
    for key, value in identity.items():
        if recorded.get(key) != value:
            raise RunDirError(
                f"{path} holds a different sweep ({key}: {_show(key, recorded.get(key))} there, "
                f"{_show(key, value)} here); re-run that sweep's own command to resume it, "
                "or choose another --out"
            )


def _show(key: str, value: Any) -> str:
    if key == "grid" and isinstance(value, dict):
        return " × ".join(f"{k}=[{', '.join(v)}]" for k, v in value.items())
    return str(value)


def epochs_done(run_dir: Path) -> int:
    """Epochs of a point's last complete checkpoint (0 if it has none)."""
    if not (run_dir / CHECKPOINT).exists():
        return 0
    return int(RunDir(run_dir).load_checkpoint()["epoch"])


def run_sweep(
    sweep: Sweep,
    executor: Executor,
    progress: Progress,
) -> list[Row]:
    """Runs (or resumes) every point on one executor; writes and returns the summary.

    A point logs to wandb when its config says so (``Launch.wandb``), grouped by the sweep.
    """
    sweep.create()
    with log_to(sweep.path):
        # A point resumed by hand past the sweep's epochs counts as finished, not as more work.
        ran = [epochs_done(sweep.point_dir(q)) for q in sweep.points]
        done = [min(r, e) for r, e in zip(ran, sweep.epochs, strict=True)]
        finished = sum(d == e for d, e in zip(done, sweep.epochs, strict=True))
        progress.echo(
            f"epgkit: sweep of {len(sweep.points)} points ({finished} finished, "
            f"{sum(0 < d < e for d, e in zip(done, sweep.epochs, strict=True))} to resume) "
            f"→ {sweep.path}"
        )
        total = progress.bar("sweep epochs", sum(sweep.epochs), sum(done))
        for i, (point, epochs, before) in enumerate(
            zip(sweep.points, sweep.epochs, ran, strict=True)
        ):
            where = f"point {i + 1}/{len(sweep.points)} {point.name}"
            if before >= epochs:  # the count the summary shows, past the sweep's if resumed on
                progress.echo(f"{where}: finished ({before}/{epochs} epochs), skipped")
                continue
            run_dir = sweep.point_dir(point)
            if (run_dir / "config.gin").is_file():
                progress.echo(f"{where}: resuming at epoch {before + 1}/{epochs}")
                prepared = prepare([], sweep.flags, resume=str(run_dir))
            else:
                progress.echo(f"{where}: starting")
                prepared = prepare(
                    sweep.plan.configs,
                    [
                        *sweep.plan.bindings,
                        *point.bindings,
                        *sweep.flags,
                        f"Launch.run_dir = {str(run_dir)!r}",
                    ],
                )
            project = prepared.launch.wandb
            group = None if project is None else WandbOptions(project, group=sweep.name)
            try:
                with (
                    prepared,  # holds the point's lock while it runs
                    track_evolution(
                        prepared, progress, group, point.name, lambda m: total.update(advance=1),
                        False,
                    ) as tracker,
                ):  # fmt: skip
                    run_evolution(prepared, tracker.wrap(executor), tracker.echo, tracker.epoch)
            finally:  # stopped too: the summary shows the epochs this point checkpointed
                write_summary(sweep, summarize(sweep))
        total.close()
        rows = summarize(sweep)
        write_summary(sweep, rows)
        progress.echo(f"sweep done: {sweep.path / 'summary.md'}")
    return rows
