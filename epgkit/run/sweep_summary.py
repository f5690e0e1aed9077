"""A sweep's summary: one row per point from its metrics, as ``summary.csv``, ``summary.md``
(a Markdown table) and ``fitness.png``."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from epgkit.run.paths import naming
from epgkit.run.plotting import plot_fitness
from epgkit.run.rundir import RunDir
from epgkit.run.sweep_plan import Plan, Point

CSV_COLUMNS = (
    "best_objective",
    "final_objective",
    "final_fitness_mean",
    "epochs_done",
    "epochs",
    "wall_s",
    "run_dir",
)  # after the point's name and its value of each axis


class Sweep(Protocol):
    """What a summary reads of a sweep (``epgkit.run.sweep.Sweep``)."""

    plan: Plan
    path: Path
    points: tuple[Point, ...]
    epochs: tuple[int, ...]

    @property
    def name(self) -> str: ...

    def point_dir(self, point: Point) -> Path: ...


@dataclass(frozen=True)
class Row:
    """One point's line of the summary. ``best`` and ``final`` are the ES's objective (see
    `objective`); ``best`` counts only epochs without guidance (α = 0), as evolve's best loss
    does. A value is None where no epoch has a finite one."""

    point: Point
    best: float | None
    final: float | None
    final_fitness: float | None
    epochs: int
    of: int
    wall_s: float
    run_dir: str


def objective(metrics: dict) -> float | None:
    """What the ES maximized in an epoch: ``objective_mean`` where the run weighs in the
    learning curve (``Experiment.fitness_curve`` > 0), else the final returns' mean. Points of
    a sweep over the curve's weight are ranked by what each one optimized."""
    return metrics.get("objective_mean", metrics.get("fitness_mean"))


def summarize(sweep: Sweep) -> list[Row]:
    """One row per point from its metrics.jsonl, best final objective first."""
    rows = []
    for point, of in zip(sweep.points, sweep.epochs, strict=True):
        run_dir = sweep.point_dir(point)
        metrics = RunDir(run_dir).metrics()  # a crashed point may end in a torn line
        # As evolve's best loss: only epochs where the learned loss alone trained (α = 0).
        scores = [
            score for m in metrics if (score := objective(m)) is not None and not m.get("alpha")
        ]
        rows.append(
            Row(
                point,
                max(scores) if scores else None,
                objective(metrics[-1]) if metrics else None,
                metrics[-1].get("fitness_mean") if metrics else None,
                len(metrics),
                of,
                sum(m["wall_s"] for m in metrics),
                str(run_dir),
            )
        )
    return sorted(rows, key=lambda r: math.inf if r.final is None else -r.final)


def write_summary(sweep: Sweep, rows: list[Row]) -> None:
    """summary.csv (exact numbers), summary.md (a table to read) and fitness.png."""
    axes = [a.binding for a in sweep.plan.axes]
    with naming(sweep.path / "summary.csv"), open(sweep.path / "summary.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["point", *axes, *CSV_COLUMNS])
        for r in rows:
            out.writerow(
                [
                    r.point.name,
                    *map(repr, r.point.values),
                    _num(r.best),
                    _num(r.final),
                    _num(r.final_fitness),
                    r.epochs,
                    r.of,
                    repr(r.wall_s),
                    r.run_dir,
                ]
            )
    with naming(sweep.path / "summary.md"):
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
        + ". Objective: what the ES maximized, the final returns' mean unless"
        + " Experiment.fitness_curve > 0. Sorted by final objective, best first;"
        + " wall time is the sum of the epochs'."
        + _uneven([r.epochs for r in rows if r.epochs]),
        "",
        "| # | "
        + " | ".join(a.binding for a in p.axes)
        + " | best objective | final objective | final fitness_mean | epochs | wall (s) | run |",
        "|---:|" + "---:|" * len(p.axes) + "---:|---:|---:|---:|---:|:---|",
    ]
    for i, r in enumerate(rows):
        cells = [
            str(i + 1),
            *(repr(v) for v in r.point.values),
            _fmt(r.best),
            _fmt(r.final),
            _fmt(r.final_fitness),
            f"{r.epochs}/{r.of}",
            f"{r.wall_s:.1f}",
            f"`{r.point.name}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![fitness of every point](fitness.png)"]
    return "\n".join(lines)


def _uneven(epochs: list[int]) -> str:
    """A warning when points ran different numbers of epochs (one stopped, or resumed with
    more), whose final objectives the ranking would otherwise compare as equals."""
    if len(set(epochs)) < 2:
        return ""
    return (f" Points ran {min(epochs)} to {max(epochs)} epochs: compare final objectives only"
            " between points of as many epochs.")  # fmt: skip


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"
