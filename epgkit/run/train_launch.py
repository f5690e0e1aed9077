"""From a loss and bindings to a finished test-time training: build, check, run, write.

Built like an evolution (``epgkit.run.launch``): every setting is a gin binding (``TestTime``
for what is tested, ``Launch`` for where it runs and writes), checked before anything is
written, and recorded in the output's ``config.gin`` beside ``summary.json``, so that a
comparison, its baselines' tuning included, can be reproduced from its output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gin

from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.run import config, preflight
from epgkit.run.cluster import Executor, Launch, local_processes
from epgkit.run.paths import check_dir
from epgkit.run.rundir import RunDirError, atomic_write_text
from epgkit.run.sources import Source, load_source
from epgkit.run.train import (
    LEARNED,
    TestTime,
    build,
    check_fits,
    methods,
    run_methods,
    table,
    test_jobs,
    write_outputs,
)

SUMMARY = "summary.json"


@dataclass(frozen=True)
class Training:
    """A built and checked test-time training; nothing of it is written yet."""

    source: Source
    exp: Experiment
    test: TestTime
    launch: Launch
    loops: dict[str, InnerLoop]
    jobs: list[Job]
    out: Path
    config: str  # every binding, as config.gin records it

    @property
    def learned(self) -> InnerLoop:
        return self.loops[LEARNED]


def default_out(source: str) -> Path:
    """``RUN_DIR/train/<time>`` for a run directory, else ``runs/train/<time>``."""
    base = Path(source) if Path(source).is_dir() else Path("runs")
    return base / "train" / time.strftime("%Y%m%d-%H%M%S")


def prepare_training(source_arg: str, bindings: Sequence[str] = ()) -> Training:
    """Loads the loss, builds its experiment with ``bindings`` (``TestTime.*``, ``Launch.*``,
    anything else), and checks everything a training needs before it writes anything.

    Raises:
        RunDirError: No such loss, a φ that does not fit, or an output that holds a training.
        ConfigError: A bad binding or value.
    """
    source = load_source(source_arg)
    exp = build(source, bindings)
    test = config.build(TestTime)
    launch = config.build(Launch)
    if launch.run_dir is None:
        with gin.unlock_config():
            gin.bind_parameter("Launch.run_dir", str(default_out(source_arg)))
        launch = config.build(Launch)
    launch = replace(launch, cluster=config.build(launch.where))
    loops = methods(exp, test.baselines, test.env_id, test.steps)
    check_fits(loops[LEARNED], source)
    local = local_processes(launch.where())
    preflight.check_training(exp, loops, LEARNED, source.phi, test.runs, local)
    out = Path(launch.run_dir)
    check_dir(out, "--out")
    if (out / SUMMARY).exists():
        raise RunDirError(f"{out} already holds a test-time training; choose another --out")
    jobs = test_jobs(source.phi, test.runs, test.seed)
    return Training(source, exp, test, launch, loops, jobs, out, gin.config_str())


def provenance(meta: dict[str, Any]) -> str:
    """Which φ a loss file holds, as ``evolve`` recorded it (``epoch`` counts ES steps)."""
    if "epoch" not in meta:
        return ""
    fitness = meta.get("fitness_mean")
    scored = "" if fitness is None else f", mean fitness {fitness:.2f} in the best unguided epoch"
    return f" (φ after {meta['epoch']} ES steps{scored})"


def run_training(
    training: Training, executor: Executor, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Trains every method on the held-out tasks; writes ``config.gin``, ``summary.json``,
    ``curves.jsonl`` and the plots into ``training.out``; returns the summary."""
    t, learned = training, training.learned
    started = time.perf_counter()
    echo(
        f"epgkit: test-time training on {learned.env_id} with {learned.policy!r}: "
        f"{t.test.runs} held-out tasks × {', '.join(t.loops)}, U={learned.steps} steps each "
        f"on {t.launch.where().describe()} → {t.out}"
    )
    echo(f"loss: {t.source.path}{provenance(t.source.meta)}")
    results = run_methods(t.loops, t.jobs, t.exp.batch_size, executor)
    info = {"source": str(t.source.path), "env_id": learned.env_id, "runs": t.test.runs,
            "seed": t.test.seed, "evolved_on": t.source.meta.get("env_id"),
            "source_epoch": t.source.meta.get("epoch"),
            "wall_s": time.perf_counter() - started}  # fmt: skip
    t.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(t.out / "config.gin", t.config)
    summary = write_outputs(t.out, t.loops, results, info)
    echo(table(summary))
    echo(f"done in {info['wall_s']:.0f} s: {t.out / SUMMARY}, config.gin, returns.png, kl.png")
    return summary
