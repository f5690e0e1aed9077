"""Hyperparameter sweeps: every combination (or a seeded random sample) of gin binding grids.

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

import ast
import csv
import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from epgkit import config
from epgkit.cluster import Executor
from epgkit.experiment import Experiment
from epgkit.launch import prepare, run_evolution
from epgkit.plotting import plot_fitness
from epgkit.rundir import CHECKPOINT, METRICS, RunDir, RunDirError
from epgkit.tracking import Progress, WandbOptions, log_to, track_evolution

SWEEP_JSON = "sweep.json"
CSV_COLUMNS = (
    "best_fitness_mean",
    "final_fitness_mean",
    "epochs_done",
    "epochs",
    "wall_s",
    "run_dir",
)  # after the point's name and its value of each axis
# scope/Configurable.parameter, as gin names a binding (a bare name would define a macro).
BINDING_NAME = re.compile(r"(?:[A-Za-z_][\w.]*/)*[A-Za-z_][\w.]*\.[A-Za-z_]\w*")


@dataclass(frozen=True)
class Axis:
    """One ``--grid``: a gin binding and the values it takes."""

    binding: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a value per axis, its gin bindings and its folder name."""

    name: str
    values: tuple[Any, ...]
    bindings: tuple[str, ...]


def parse_axis(spec: str) -> Axis:
    """``'OpenES.sigma=[0.01, 0.02]'`` → an axis; values are Python literals (ast)."""
    name, sep, text = spec.partition("=")
    name = name.strip()
    example = "e.g. --grid 'OpenES.sigma=[0.01, 0.02]'"
    if not sep or not BINDING_NAME.fullmatch(name):
        raise config.ConfigError(
            f"--grid {spec!r}: give a configurable's parameter and a list of values, {example}"
        )
    try:
        values = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise config.ConfigError(
            f"--grid {spec!r}: {text.strip()!r} is not a list of Python literals, {example}"
        ) from None
    if not isinstance(values, list | tuple) or not values:
        raise config.ConfigError(f"--grid {spec!r}: the values must be a non-empty list, {example}")
    if len({repr(v) for v in values}) < len(values):
        raise config.ConfigError(f"--grid {spec!r}: a value is repeated")
    return Axis(name, tuple(values))


def _text(value: Any) -> str:
    """A value as a file-name fragment: letters, digits and ``. + - _`` only."""
    text = value if isinstance(value, str) else repr(value)
    return re.sub(r"[^\w.+-]+", "_", text).strip("_") or "_"


@dataclass(frozen=True)
class Plan:
    """A sweep: the configs and bindings shared by all points, the grid, and the sampling.

    Attributes:
        configs: Gin files, resolved to absolute paths.
        bindings: ``-b`` bindings shared by every point (before the point's own).
        axes: The grids; points are their Cartesian product, the last axis varying fastest.
        samples: Run only this many points drawn without replacement; None runs them all.
        seed: Seed of that draw.
    """

    configs: tuple[str, ...]
    bindings: tuple[str, ...]
    axes: tuple[Axis, ...]
    samples: int | None = None
    seed: int = 0

    def size(self) -> int:
        """Points of the full grid."""
        return math.prod(len(a.values) for a in self.axes)

    def points(self) -> list[Point]:
        """The points in grid order; names made unique if two sanitize alike."""
        if self.samples is None:
            combos = list(itertools.product(*(a.values for a in self.axes)))
        else:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed))
            picks = sorted(int(i) for i in rng.choice(self.size(), self.samples, replace=False))
            combos = [self._combo(i) for i in picks]
        names = [
            ",".join(
                f"{_text(a.binding)}={_text(v)}" for a, v in zip(self.axes, combo, strict=True)
            )
            for combo in combos
        ]
        points = []
        for i, (name, combo) in enumerate(zip(names, combos, strict=True)):
            if names.count(name) > 1:
                name = f"{name}~{i}"
            if len(name) > 200:  # file names are limited to 255 bytes
                digest = hashlib.sha1(name.encode()).hexdigest()[:8]
                name = f"{name[:190]}~{digest}"
            bindings = tuple(f"{a.binding} = {v!r}" for a, v in zip(self.axes, combo, strict=True))
            points.append(Point(name, combo, bindings))
        return points

    def _combo(self, index: int) -> tuple[Any, ...]:
        """The ``index``-th combination of the product, without listing the product."""
        values = []
        for axis in reversed(self.axes):
            index, digit = divmod(index, len(axis.values))
            values.append(axis.values[digit])
        return tuple(reversed(values))

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same sweep (recorded in sweep.json)."""
        return {
            "configs": list(self.configs),
            "bindings": list(self.bindings),
            "grid": {a.binding: [repr(v) for v in a.values] for a in self.axes},
            "samples": self.samples,
            "seed": self.seed if self.samples is not None else None,
        }

    def name(self) -> str:
        """A short stable name from a hash of the identity: ``sweep-1a2b3c4d``."""
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()
        return f"sweep-{digest[:8]}"


def plan(
    configs: Sequence[str],
    grids: Sequence[str],
    bindings: Sequence[str] = (),
    samples: int | None = None,
    seed: int = 0,
) -> Plan:
    """Checks the command's arguments and makes a plan (nothing is parsed by gin yet)."""
    if not configs:
        raise config.ConfigError("give at least one config file, e.g. gin/quickstart.gin")
    if not grids:
        raise config.ConfigError(
            "give at least one --grid, e.g. --grid 'OpenES.sigma=[0.01, 0.02]'"
        )
    axes = tuple(parse_axis(g) for g in grids)
    names = [a.binding for a in axes]
    for name in names:
        if names.count(name) > 1:
            raise config.ConfigError(f"--grid {name} is given twice; give it once with all values")
    bound = {b.partition("=")[0].strip() for b in bindings}
    both = [n for n in names if n in bound]
    if both:
        raise config.ConfigError(f"{both[0]} is both swept (--grid) and fixed (-b); keep one")
    full = math.prod(len(a.values) for a in axes)
    if samples is not None and not 1 <= samples <= full:
        raise config.ConfigError(
            f"--samples must be between 1 and the {full} points of the grid, got {samples}"
        )
    resolved = tuple(str(config.resolve(c).resolve()) for c in configs)
    return Plan(resolved, tuple(bindings), axes, samples, seed)


@dataclass(frozen=True)
class Sweep:
    """A checked plan and its directory; ``workers``, ``scheduler``, ``timeout`` say where
    its points run (``cluster.connect``'s arguments)."""

    plan: Plan
    path: Path
    points: tuple[Point, ...]
    epochs: tuple[int, ...]
    flags: tuple[str, ...]
    workers: int
    scheduler: str | None
    timeout: float

    @property
    def name(self) -> str:
        return self.path.name

    def point_dir(self, point: Point) -> Path:
        return self.path / point.name


def default_out(p: Plan) -> Path:
    """``runs/<config>/<name>``: the same command always finds its own sweep again."""
    return Path("runs") / Path(p.configs[0]).stem / p.name()


def open_sweep(p: Plan, out: str | Path | None = None, flags: Sequence[str] = ()) -> Sweep:
    """Checks every point's config, then starts ``out`` or checks it holds this same sweep.

    ``flags`` are bindings that do not change results (``Experiment.workers``, ``scheduler``):
    recorded in each new point's config.gin, not part of what makes the sweep.
    Nothing is written before every point's config passed.
    """
    path = Path(out) if out is not None else default_out(p)
    points = p.points()
    exps = []
    for point in points:
        try:
            config.parse(p.configs, [*p.bindings, *flags, *point.bindings])
            exps.append(config.build(Experiment))
        except config.ConfigError as err:
            raise config.ConfigError(f"sweep point {point.name}: {err}") from None
    record = {
        **p.identity(),
        "points": [{"name": q.name, "bindings": list(q.bindings)} for q in points],
    }
    spec = path / SWEEP_JSON
    if spec.is_file():
        _check_same(path, json.loads(spec.read_text()), p.identity())
    elif path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(f"{path} exists and is not a sweep directory (no {SWEEP_JSON})")
    else:
        path.mkdir(parents=True, exist_ok=True)
        spec.write_text(json.dumps(record, indent=2) + "\n")
    epochs = tuple(e.epochs for e in exps)
    # One cluster serves every point: the first point's settings choose it.
    first = exps[0]
    return Sweep(
        p,
        path,
        tuple(points),
        epochs,
        tuple(flags),
        first.n_workers,
        first.scheduler,
        first.connect_timeout,
    )


def _check_same(path: Path, recorded: dict[str, Any], identity: dict[str, Any]) -> None:
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
    wandb: WandbOptions | None = None,
) -> list[Row]:
    """Runs (or resumes) every point on one executor; writes and returns the summary."""
    group = replace(wandb, group=wandb.group or sweep.name) if wandb is not None else None
    with log_to(sweep.path):
        done = [
            min(epochs_done(sweep.point_dir(q)), e)
            for q, e in zip(sweep.points, sweep.epochs, strict=True)
        ]
        finished = sum(d == e for d, e in zip(done, sweep.epochs, strict=True))
        progress.echo(
            f"epgkit: sweep of {len(sweep.points)} points ({finished} finished, "
            f"{sum(0 < d < e for d, e in zip(done, sweep.epochs, strict=True))} to resume) "
            f"→ {sweep.path}"
        )
        total = progress.bar("sweep epochs", sum(sweep.epochs), sum(done))
        for i, (point, epochs, before) in enumerate(
            zip(sweep.points, sweep.epochs, done, strict=True)
        ):
            where = f"point {i + 1}/{len(sweep.points)} {point.name}"
            if before >= epochs:
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
                        f"Experiment.run_dir = {str(run_dir)!r}",
                    ],
                )
            with track_evolution(
                prepared, progress, group, point.name, lambda m: total.update(advance=1), False
            ) as tracker:
                run_evolution(prepared, tracker.wrap(executor), tracker.echo)
            write_summary(sweep, summarize(sweep))
        total.close()
        rows = summarize(sweep)
        write_summary(sweep, rows)
        progress.echo(f"sweep done: {sweep.path / 'summary.md'}")
    return rows


@dataclass(frozen=True)
class Row:
    """One point's line of the summary; fitness is None where no epoch has a finite one."""

    point: Point
    best: float | None
    final: float | None
    epochs: int
    of: int
    wall_s: float
    run_dir: str


def summarize(sweep: Sweep) -> list[Row]:
    """One row per point from its metrics.jsonl, best final fitness first."""
    rows = []
    for point, of in zip(sweep.points, sweep.epochs, strict=True):
        run_dir = sweep.point_dir(point)
        metrics = _metrics(run_dir)
        means = [m["fitness_mean"] for m in metrics if m.get("fitness_mean") is not None]
        final = metrics[-1].get("fitness_mean") if metrics else None
        rows.append(
            Row(
                point,
                max(means) if means else None,
                final,
                len(metrics),
                of,
                sum(m["wall_s"] for m in metrics),
                str(run_dir),
            )
        )
    return sorted(rows, key=lambda r: math.inf if r.final is None else -r.final)


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """A point's complete metrics lines (a crashed point may end in a torn line)."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    data = path.read_text()
    return [json.loads(x) for x in data[: data.rfind("\n") + 1].splitlines() if x.strip()]


def write_summary(sweep: Sweep, rows: list[Row]) -> None:
    """summary.csv (exact numbers), summary.md (a table to read) and fitness.png."""
    axes = [a.binding for a in sweep.plan.axes]
    with open(sweep.path / "summary.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["point", *axes, *CSV_COLUMNS])
        for r in rows:
            out.writerow(
                [
                    r.point.name,
                    *map(repr, r.point.values),
                    _num(r.best),
                    _num(r.final),
                    r.epochs,
                    r.of,
                    repr(r.wall_s),
                    r.run_dir,
                ]
            )
    (sweep.path / "summary.md").write_text(f"# Sweep {sweep.name}\n\n{table(sweep, rows)}\n")
    started = [r for r in rows if r.epochs]
    if started:
        plot_fitness(
            [r.run_dir for r in started],
            sweep.path / "fitness.png",
            [r.point.name for r in started],
        )


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def table(sweep: Sweep, rows: list[Row]) -> str:
    """The summary as a Markdown table, with the sweep's shared settings above it."""
    p = sweep.plan
    lines = [
        f"Configs: {', '.join(Path(c).name for c in p.configs)}"
        + (f"; bindings: {'; '.join(p.bindings)}" if p.bindings else "")
        + f"; {len(sweep.points)} of {p.size()} grid points"
        + (f" (sampled, seed {p.seed})" if p.samples is not None else "")
        + ". Sorted by final fitness_mean, best first; wall time is the sum of the epochs'.",
        "",
        "| # | "
        + " | ".join(a.binding for a in p.axes)
        + " | best fitness_mean | final fitness_mean | epochs | wall (s) | run |",
        "|---:|" + "---:|" * len(p.axes) + "---:|---:|---:|---:|:---|",
    ]
    for i, r in enumerate(rows):
        cells = [
            str(i + 1),
            *(repr(v) for v in r.point.values),
            _fmt(r.best),
            _fmt(r.final),
            f"{r.epochs}/{r.of}",
            f"{r.wall_s:.1f}",
            f"`{r.point.name}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![fitness of every point](fitness.png)"]
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"
