"""Plots of runs: ES fitness against epoch (the paper's Figure 20 style)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def plot_fitness(
    run_dirs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Mean fitness with its ±std band and the max, one colour per run; writes ``out``."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, run_dir in enumerate(run_dirs):
        rows = [r for r in _metrics(Path(run_dir)) if r.get("fitness_mean") is not None]
        if not rows:
            continue
        label = labels[i] if labels else Path(run_dir).name
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
    ax.set_xlabel("epoch")
    ax.set_ylabel("ES fitness (final return of the inner loops)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
