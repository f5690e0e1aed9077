"""What an analysis runs on: the learned loss rebuilt as ``epgkit train`` rebuilds it, the PPO
baseline of its experiment, held-out tasks, the loss at the start of evolution (φ₀), and the
folder the figures and JSON go to.

φ₀ is not stored in a run directory or a loss file; it need not be: ``evolve`` draws it from
``SeedSequence([Experiment.seed, 0])`` with the loss's ``init_phi``, and the operative config
recorded with every loss holds the seed and the loss's architecture, so ``initial_phi``
redraws the same vector (``tests/test_analyze.py`` pins this against ``evolve``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from epgkit.errors import ConfigError
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job, Result, UpdateView
from epgkit.run import train as tt
from epgkit.run.lock import check_outside_runs
from epgkit.run.paths import check_dir, naming
from epgkit.run.rundir import RunDirError, json_safe
from epgkit.run.sources import load_source

matplotlib.use("Agg")


@dataclasses.dataclass(frozen=True)
class Study:
    """One analysis's inputs, checked.

    Attributes:
        source: The learned loss and the config it was evolved with.
        exp: The experiment rebuilt from that config and the user's bindings.
        learned: The test-time inner loop of the learned loss (α = 0).
        ppo: The PPO baseline of the experiment, on the same env and step budget.
        jobs: The held-out tasks and inner-loop seeds (``epgkit train``'s for this seed).
        out: Where the figure and the JSON go.
        info: What the JSON records about the study (source, env, seeds, sizes).
    """

    source: tt.Source
    exp: Experiment
    learned: InnerLoop
    ppo: InnerLoop
    jobs: list[Job]
    out: Path
    info: dict[str, Any]


def prepare(
    kind: str,
    source_arg: str,
    env: str | None = None,
    runs: int = 3,
    steps: int | None = None,
    out: str | None = None,
    seed: int = 0,
    bindings: Sequence[str] = (),
) -> Study:
    """Loads and checks everything ``kind`` (sensitivity, gradients, kl) needs; writes nothing.

    Raises:
        RunDirError: The source is not a loss, does not fit the env, or ``out`` already holds
            this analysis.
        ConfigError: A bad binding, env or step budget.
    """
    if runs < 1:
        raise ConfigError(f"--runs must be ≥ 1, got {runs}")
    source = load_source(source_arg)
    exp = tt.build(source, bindings)
    loops = tt.methods(exp, ["ppo"], env, steps)
    tt.check_fits(loops[tt.LEARNED], source)
    if out is None:
        base = Path(source_arg) if Path(source_arg).is_dir() else Path("runs")
        out = str(base / "analyze" / time.strftime("%Y%m%d-%H%M%S"))
    path = Path(out)
    check_dir(path, "--out")  # a file there, a read-only place, a name too long
    check_outside_runs(path, "--out")
    if (path / f"{kind}.json").exists():
        raise RunDirError(f"{path} already holds a {kind} analysis; choose another --out")
    jobs = tt.test_jobs(source.phi, runs, seed)
    learned = loops[tt.LEARNED]
    info = {
        "source": str(source.path),
        "loss": type(learned.loss).__name__,
        "env_id": learned.env_id,
        "evolved_on": source.meta.get("env_id"),
        "source_epoch": source.meta.get("epoch"),
        "runs": runs,
        "seed": seed,
        "bindings": list(bindings),  # on top of the loss's recorded config: to redo the study
        "steps": learned.steps,
        "lr": learned.lr,
        "update_every": learned.update_every,
        "buffer_size": learned.buffer_size,
        "task_seeds": [j.task_seed for j in jobs],
        "seeds": [j.seed for j in jobs],
    }
    return Study(source, exp, learned, loops["ppo"], jobs, path, info)


def initial_phi(exp: Experiment) -> np.ndarray:
    """φ₀, the mean φ of epoch 0, drawn exactly as ``epgkit.method.evolve.evolve`` draws it."""
    return exp.inner.init_phi(np.random.default_rng(np.random.SeedSequence([exp.seed, 0])))


def observe(
    inner: InnerLoop, jobs: Sequence[Job], on_update: Callable[[UpdateView], None]
) -> list[Result]:
    """Runs the inner loops of ``jobs``, calling ``on_update`` at every update."""
    return inner.run(jobs, on_update=on_update)


def write_json(study: Study, kind: str, data: dict[str, Any]) -> Path:
    """``<out>/<kind>.json``: the study's info, then the analysis's data."""
    study.out.mkdir(parents=True, exist_ok=True)
    path = study.out / f"{kind}.json"
    with naming(path):
        path.write_text(json.dumps(json_safe({**study.info, **data}), indent=2) + "\n")
    return path


def save_figure(fig: Any, path: Path) -> Path:
    """Writes a matplotlib figure and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with naming(path):
            fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
