"""Plots in the paper's style: ES fitness against epoch (Figure 20) and test-time training
curves, returns with their interquartile range and the KL of each update (Figures 5–11)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from epgkit.run.paths import naming  # noqa: E402
from epgkit.run.rundir import METRICS, RunDirError, jsonl_rows  # noqa: E402
from epgkit.run.stats import CI_LEVEL  # noqa: E402

_FITNESS_KEYS = ("epoch", "fitness_mean", "fitness_std", "fitness_max")


def _fitness_rows(run_dir: Path) -> list[dict]:
    """The complete epochs of a run that have a fitness, checked line by line.

    A crash mid-append leaves a last line without its newline: that epoch never finished, so
    it is left out (the file itself is only read). Any other line that is not a JSON object
    with the fitness keys is a damaged file, reported with its line number.
    """
    path = Path(run_dir) / METRICS
    rows = []
    for number, row in jsonl_rows(path):
        if row.get("fitness_mean") is None:
            continue
        missing = [key for key in _FITNESS_KEYS if key not in row]
        if missing:
            raise RunDirError(f"{path}, line {number}: lacks {', '.join(missing)}")
        rows.append(row)
    return rows


def plot_fitness(
    run_dirs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Mean fitness with its ±std band and the max, one colour per run, and dashed the mean
    of the learning curves for runs evolved with ``Experiment.fitness_curve``; writes ``out``.

    Raises:
        RunDirError: A ``metrics.jsonl`` has a damaged line (nothing is written then).
    """
    # Every file is read before the figure exists: a damaged one leaves nothing behind.
    runs = [(Path(run_dir), _fitness_rows(Path(run_dir))) for run_dir in run_dirs]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (run_dir, rows) in enumerate(runs):
        if not rows:
            continue
        label = labels[i] if labels else run_dir.name
        epochs = [r["epoch"] for r in rows]
        mean = [r["fitness_mean"] for r in rows]
        std = [r["fitness_std"] for r in rows]
        (line,) = ax.plot(epochs, mean, label=f"{label} mean")
        ax.fill_between(
            epochs,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            color=line.get_color(),
            alpha=0.2,
        )
        ax.plot(
            epochs,
            [r["fitness_max"] for r in rows],
            ":",
            color=line.get_color(),
            label=f"{label} max",
        )
        if all("curve_mean" in r for r in rows):  # Experiment.fitness_curve > 0
            curve = [r["curve_mean"] for r in rows]
            ax.plot(epochs, curve, "--", color=line.get_color(), label=f"{label} learning curve")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ES fitness (final return of the inner loops)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _matrix(runs: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, values[run, point]) from curve points; the final evaluation point only for returns."""
    keep = [[p for p in points if key == "return" or not p.get("final")] for points in runs]
    x = np.array([p["env_step"] if key == "return" else p["update"] for p in keep[0]], float)
    values = np.array([[np.nan if p[key] is None else p[key] for p in pts] for pts in keep], float)
    return x, values


def plot_returns(
    curves: dict[str, list[list[dict]]],
    out: str | Path,
    seed: int = 0,
    iqm: dict[str, tuple[float, float, float]] | None = None,
) -> Path:
    """Return against env steps per method, as in the paper's Section 4 figures: the mean as
    a solid line, the interquartile range shaded, five randomly chosen runs dotted.

    ``iqm`` (method → IQM of the final returns, CI low, CI high; ``epgkit.run.stats``) adds a
    panel on the right with each method's IQM and its confidence interval, and the numbers
    to the legend.
    """
    rng = np.random.default_rng(seed)
    iqm = iqm or {}
    if iqm:
        fig, (ax, side) = plt.subplots(1, 2, figsize=(9, 4), width_ratios=(4, 1.2))
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    colors = {}
    for method, runs in curves.items():
        x, y = _matrix(runs, "return")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(y, 0)
            q25, q75 = np.nanpercentile(y, 25, 0), np.nanpercentile(y, 75, 0)
        finished = int(np.isfinite([pts[-1]["return"] for pts in runs]).sum())  # failed: NaN
        label = f"{method} (n={finished}" + (f" of {len(runs)})" if finished < len(runs) else ")")
        if method in iqm:
            label += ", IQM {:.4g} [{:.4g}, {:.4g}]".format(*iqm[method])
        (line,) = ax.plot(x, mean, label=label)
        colors[method] = line.get_color()
        ax.fill_between(x, q25, q75, color=line.get_color(), alpha=0.2, linewidth=0)
        for i in rng.choice(len(runs), size=min(5, len(runs)), replace=False):
            ax.plot(x, y[i], ":", color=line.get_color(), linewidth=0.8, alpha=0.8)
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if iqm:
        _iqm_panel(side, iqm, colors)
    return _save(fig, out)


def _iqm_panel(ax, iqm: dict[str, tuple[float, float, float]], colors: dict[str, str]) -> None:
    """Each method's IQM as a dot and its confidence interval as a bar, side by side."""
    for k, (method, (value, low, high)) in enumerate(iqm.items()):
        ax.vlines(k, low, high, color=colors.get(method), linewidth=2)
        ax.plot([k - 0.15, k + 0.15], [low, low], [k - 0.15, k + 0.15], [high, high],
                color=colors.get(method), linewidth=1.5)  # fmt: skip
        ax.plot(k, value, "o", color=colors.get(method))
    ax.set_xticks(range(len(iqm)), list(iqm), rotation=30, fontsize=8)
    ax.set_xlim(-0.5, len(iqm) - 0.5)
    ax.set_title(f"final return: IQM, {CI_LEVEL:.0%} CI", fontsize=9)
    ax.grid(alpha=0.3)


def plot_kl(curves: dict[str, list[list[dict]]], out: str | Path) -> Path:
    """KL(π_before || π_after) of each update against the update index, mean over runs."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for method, runs in curves.items():
        x, y = _matrix(runs, "kl")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(x, np.nanmean(y, 0), label=method)
    ax.set_xlabel("policy update")
    ax.set_ylabel("KL(before ‖ after)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with naming(out):
            fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out
