"""From a loss and bindings to a finished test-time training: build, check, run, write.

Built like an evolution (``epgkit.run.launch``): every setting is a gin binding (``TestTime``
for what is tested, ``Launch`` for where it runs and writes), checked before anything is
written, and recorded in the output's ``config.gin`` beside ``summary.json``, so that a
comparison, its baselines' tuning included, can be reproduced from its output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gin

from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.run import config, preflight, user_modules
from epgkit.run.cluster import Executor, Launch, local_processes
from epgkit.run.lock import LOCK, DirLock, claim
from epgkit.run.paths import check_dir
from epgkit.run.progress import LOG
from epgkit.run.rundir import SUMMARY, RunDir, RunDirError, atomic_write_text
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
    lock: DirLock  # held on ``out`` until ``close``
    user_modules: dict[str, Any] = field(default_factory=dict)  # theirs: file and SHA-256
    warnings: tuple[str, ...] = ()  # the user's code changed since the loss was evolved

    @property
    def learned(self) -> InnerLoop:
        return self.loops[LEARNED]

    def close(self) -> None:
        """Releases the output directory (removed if the training wrote nothing there)."""
        self.lock.release()

    def __enter__(self) -> Training:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_out(source: str) -> Path:
    """``RUN_DIR/train/<time>`` for a run directory, else ``runs/train/<time>`` (``-2``, ``-3``,
    … appended by ``claim`` when another training took that name)."""
    base = Path(source) if Path(source).is_dir() else Path("runs")
    return base / "train" / time.strftime("%Y%m%d-%H%M%S")


#: What a training stopped before its summary leaves: reused, not refused.
STOPPED_TRAINING = frozenset({LOG, "config.gin", "wandb"})


def _open_out(out: Path) -> DirLock:
    """Locks a ``--out`` the user named, refused unless it is new or empty: a training never
    writes over another's output or into an evolution's run directory."""
    check_dir(out, "--out")
    lock = DirLock(out).acquire()
    try:
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        if (out / SUMMARY).exists():
            raise RunDirError(f"{out} already holds a test-time training; choose another --out")
        run = RunDir(out)
        if run.is_run() or (run.holds_run() and not (out / "config.gin").is_file()):
            raise RunDirError(
                f"--out {out} holds an evolution's run; a training writes into a new or empty "
                "directory (by default RUN_DIR/train/<time>): choose another --out"
            )
        # A training stopped before its summary leaves its log and config.gin (an evolution
        # writes meta.json before its config.gin): the same command takes the folder again.
        if others and not set(others) <= STOPPED_TRAINING:
            shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
            raise RunDirError(
                f"--out {out} is not empty ({shown}); a training writes into a new or empty "
                "directory so that it overwrites nothing: choose another --out"
            )
    except BaseException:
        lock.release()
        raise
    return lock


def prepare_training(source_arg: str, bindings: Sequence[str] = ()) -> Training:
    """Loads the loss, builds its experiment with ``bindings`` (``TestTime.*``, ``Launch.*``,
    anything else), and checks everything a training needs before it writes anything.

    The output directory is locked (``Training.close`` releases it): use as
    ``with prepare_training(...) as training:``.

    Raises:
        RunDirError: No such loss, a φ that does not fit, an output that is not new or empty,
            or one another process writes.
        ConfigError: A bad binding or value.
    """
    source = load_source(source_arg)
    exp = build(source, bindings)
    test = config.build(TestTime)
    launch = config.build(Launch)
    launch = replace(launch, cluster=config.build(launch.where))
    loops = methods(exp, test.baselines, test.env_id, test.steps)
    check_fits(loops[LEARNED], source)
    local = local_processes(launch.where())
    preflight.check_training(exp, loops, LEARNED, source.phi, test.runs, local)
    jobs = test_jobs(source.phi, test.runs, test.seed)
    if launch.run_dir is None:  # the output's name is recorded in its config.gin
        out = default_out(source_arg)
        check_dir(out, "--out")
        out, lock = claim(out.parent, out.name)
        with gin.unlock_config():
            gin.bind_parameter("Launch.run_dir", str(out))
        launch = replace(launch, run_dir=str(out))
    else:
        out = Path(launch.run_dir)
        lock = _open_out(out)
    now, warnings = user_modules.warnings(
        gin.config_str(), [loop.env_id for loop in loops.values()], {},
        source.meta.get("user_modules", {}),
    )  # fmt: skip
    return Training(
        source, exp, test, launch, loops, jobs, out, gin.config_str(), lock, now, tuple(warnings)
    )


def provenance(meta: dict[str, Any]) -> str:
    """Which φ a loss file holds, as ``evolve`` recorded it: the mean φ after ``epoch`` epochs
    (not as many ES steps: a fully guided epoch moves no φ)."""
    if "epoch" not in meta:
        return ""
    fitness = meta.get("fitness_mean")
    scored = "" if fitness is None else f", mean fitness {fitness:.2f} in the best unguided epoch"
    return f" (φ after {meta['epoch']} epochs{scored})"


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
    for warning in t.warnings:
        echo(f"epgkit: warning: {warning}")
    try:
        results = run_methods(t.loops, t.jobs, t.exp.batch_size, executor)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (the CLI's sigterm_unwinds)
        echo(f"epgkit: stopped before the summary; the same command with --out {t.out} "
             "starts the training again")  # fmt: skip
        raise
    info = {"source": str(t.source.path), "env_id": learned.env_id, "runs": t.test.runs,
            "seed": t.test.seed, "evolved_on": t.source.meta.get("env_id"),
            "source_epoch": t.source.meta.get("epoch"), "user_modules": t.user_modules,
            "wall_s": time.perf_counter() - started}  # fmt: skip
    t.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(t.out / "config.gin", t.config)
    summary = write_outputs(t.out, t.loops, results, info)
    echo(table(summary))
    echo(f"done in {info['wall_s']:.0f} s: {t.out / SUMMARY}, config.gin, returns.png, kl.png")
    return summary
