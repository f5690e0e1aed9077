"""From config files to a running evolution: parse, build, open the run directory, report.

Shared by ``epgkit evolve`` and ``epgkit sweep`` so that a sweep point is an ordinary run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gin
import numpy as np
from gin.config import ParserDelegate
from gin.config_parser import BindingStatement, ConfigParser

from epgkit.method.evolve import evolve
from epgkit.method.experiment import Experiment
from epgkit.method.user_code import inner_loop_parts
from epgkit.registry import index
from epgkit.run import config, preflight, user_modules
from epgkit.run.cluster import Executor, Launch, local_processes
from epgkit.run.dask_cluster import idle_workers
from epgkit.run.lock import DirLock, claim
from epgkit.run.paths import check_dir, naming
from epgkit.run.plotting import plot_fitness
from epgkit.run.renamed import upgrade
from epgkit.run.resume import check_config, check_resumable, plan_repair
from epgkit.run.rundir import (
    BEST_LOSS,
    CHECKPOINT,
    LAST_LOSS,
    RunDir,
    RunDirError,
    load_loss,
)
from epgkit.run.sources import load_source

#: What ``--resume`` may change: where the run goes on (``Launch`` and the clusters' bindings,
#: but not its directory), and (recorded in its config.gin) how many epochs it runs. Anything
#: else would make one run out of two experiments.
EXTEND = ("Experiment.epochs",)
RUN_DIR = "Launch.run_dir"


def is_where(name: str) -> bool:
    """Whether binding ``name`` (``scope/Configurable.param``) says where a run happens: a
    parameter of ``Launch`` or of a registered cluster, which never changes results."""
    configurable = name.rpartition("/")[2].rpartition(".")[0].rpartition(".")[2]
    return configurable == "Launch" or configurable in index("cluster")


def _resumable(name: str) -> bool:
    return is_where(name) or name in EXTEND  # Launch.run_dir too: the run may have moved


@dataclass
class Prepared:
    """A built and checked experiment, holding its run directory's lock until ``close``
    (use as ``with prepare(...) as prepared:``); the directory is written by ``open``."""

    exp: Experiment
    launch: Launch
    run: RunDir
    meta: dict[str, Any]
    config: str
    files: list[str]
    resume: bool
    extend: tuple[str, ...] = ()  # bindings a resume adds to the run's config.gin
    done: int = 0  # epochs the run has done already (its checkpoint's)
    phi0: np.ndarray | None = None  # Experiment.init_loss's φ, for a run without a checkpoint
    warnings: tuple[str, ...] = ()  # about the user's code (epgkit.run.user_modules)
    lock: DirLock | None = None

    @property
    def finished(self) -> bool:
        """A resumed run that has done all its epochs already: nothing to run or write."""
        return self.resume and self.done >= self.exp.epochs

    def close(self) -> None:
        """Releases the run directory (a start refused after ``prepare`` leaves no trace)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Prepared:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Creates the run directory (or reopens it to resume) and writes the configs."""
        if not self.resume:
            self.run.create(self.config, self.files)
        elif self.extend:
            with open(self.run.path / "config.gin", "a") as f:
                f.write(f"\n# --resume {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                f.write("".join(f"{b}\n" for b in self.extend))
        self.run.write_operative(self.meta["operative_config"])


def _check_resume_bindings(bindings: Sequence[str]) -> tuple[str, ...]:
    """Refuses bindings that would change a resumed run; returns those to record."""
    changed, extend, named = [], [], []
    for binding in map(upgrade, bindings):
        try:  # gin's own parser: multi-line values, scopes and comments are its business
            statements = list(ConfigParser(binding, ParserDelegate(skip_unknown=True)))
        except Exception:  # noqa: BLE001  (a malformed binding: config.parse reports it)
            continue
        for st in statements:
            if not isinstance(st, BindingStatement):
                changed.append(binding.strip())  # import / include
                continue
            name = f"{st.scope + '/' if st.scope else ''}{st.selector}.{st.arg_name}"
            if name in EXTEND:
                extend.append(f"{name} = {st.value!r}")
            elif name == RUN_DIR or not is_where(name):
                changed.append(name)
        if all(isinstance(st, BindingStatement) for st in statements):
            named.append(binding)
    if changed:  # refused below; a name gin does not know gets gin's message and hints first
        config.parse([], named, scopes=False)  # bindings alone: no scope is called
    if changed == [RUN_DIR]:
        raise config.ConfigError(
            "--resume continues a run in its own directory and cannot change Launch.run_dir "
            "(--run-dir): copy the directory and resume the copy"
        )
    if changed:
        raise config.ConfigError(
            f"--resume continues a run as it was configured; it cannot change "
            f"{', '.join(changed)} (it may set {', '.join(EXTEND)} and where it runs: the "
            "cluster's bindings and Launch's but its run_dir). Start a new run to try other "
            "settings."
        )
    return tuple(extend)


def prepare(
    configs: Sequence[str], bindings: Sequence[str] = (), resume: str | None = None
) -> Prepared:
    """Parses the configs, builds the experiment, locks and checks its run directory.

    Nothing is written here but the lock file (and the folder that holds it): ``Prepared.open``
    writes once the cluster is reached too, and a refused start, released, leaves no trace.

    Raises:
        Busy: Another process writes the run directory.
    """
    if resume is not None:
        check_resumable(resume)
        if configs:
            raise config.ConfigError(
                "--resume takes its config from the run directory; give no config files"
            )
    held: list[DirLock] = []  # released if the start is refused
    try:
        if resume is not None:  # the checkpoint and logs are read under the lock
            held.append(DirLock(resume).acquire())
        prepared = _prepare(configs, bindings, resume, held)
        if not held:  # a new run where the user said: refused if another process writes there
            check_dir(prepared.run.path, "--run-dir")  # a file there, a read-only place, ...
            held.append(DirLock(prepared.run.path).acquire())
            prepared.run.check_free()
    except BaseException:
        for lock in held:
            lock.release()
        raise
    prepared.lock = held[0]
    return prepared


def _prepare(
    configs: Sequence[str], bindings: Sequence[str], resume: str | None, held: list[DirLock]
) -> Prepared:
    """Builds and checks the run; a new run without ``Launch.run_dir`` claims a directory of
    its own, whose lock goes into ``held``."""
    ckpt = None
    if resume is not None:
        run = RunDir(resume)
        extend = _check_resume_bindings(bindings)
        configs, old = [str(run.path / "config.gin")], []
        with naming(run.path / "config.gin"):
            recorded = (run.path / "config.gin").read_text()
        if upgrade(recorded) != recorded:  # recorded before Launch: Experiment.workers and such
            configs, old = [], [recorded]  # parsed as bindings, which config.parse upgrades
        bindings = [*old, *bindings, f"{RUN_DIR} = {str(run.path)!r}"]
        if (run.path / CHECKPOINT).exists():
            # A corrupt checkpoint is refused here, before anything runs.
            ckpt = run.load_checkpoint()
        plan_repair(run.path, ckpt)  # logs that disagree with it are refused now
        done = 0 if ckpt is None else int(ckpt["epoch"])
    elif not configs:
        raise config.ConfigError("give at least one config file, e.g. gin/quickstart.gin")
    else:
        extend, done = (), 0
    paths = config.parse(configs, bindings)
    launch = config.build(Launch)
    if launch.run_dir is None:
        path = Path("runs") / paths[0].stem / time.strftime("%Y%m%d-%H%M%S")
        check_dir(path, "--run-dir")
        path, lock = claim(path.parent, path.name)
        held.append(lock)
        with gin.unlock_config():
            gin.bind_parameter(RUN_DIR, str(path))
        launch = config.build(Launch)
    launch = replace(launch, cluster=config.build(launch.where))
    # Built once; policy None: the env's action space chooses.
    exp = config.experiment()
    if resume is not None and extend and exp.epochs <= done:
        raise config.ConfigError(
            f"--resume {resume}: the run has done {done} epochs already; "
            f"Experiment.epochs = {exp.epochs} adds none"
        )
    # Values, env, memory and the user's env and loss on a tiny batch, before anything is written.
    checked = preflight.check_experiment(exp, local_processes(launch.where()))
    meta = {
        "env_id": exp.inner.env_id,
        "loss": type(exp.inner.loss).__name__,
        "policy": repr(exp.inner.policy),
        "phi_size": checked.phi_size,
        "obs_dim": checked.dims.obs_dim,
        "act_dim": checked.dims.act_dim,
        "operative_config": gin.operative_config_str(),
    }
    last = Path(str(launch.run_dir)) / LAST_LOSS
    recorded = load_loss(last)[1].get("user_modules", {}) if resume and last.exists() else None
    meta["user_modules"], notes = user_modules.warnings(
        gin.config_str(),
        [exp.inner.env_id],
        inner_loop_parts(exp.inner) | {"strategy": exp.strategy},
        recorded,
    )
    phi0 = None
    if exp.init_loss is not None and ckpt is None:
        phi0, meta["init_loss"] = _init_loss(exp.init_loss, meta)
    run = RunDir(launch.run_dir)
    if resume is not None:  # an edited config.gin is refused as a -b change would be
        check_config(
            run.path, meta["operative_config"], meta["phi_size"], ckpt, _resumable, exp.strategy
        )
    files = [str(p) for p in paths]
    return Prepared(exp, launch, run, meta, gin.config_str(), files, resume is not None, extend,
                    done, phi0, tuple(notes))  # fmt: skip


def _init_loss(name: str, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """``Experiment.init_loss``'s φ, refused unless it fits this run's loss; and where it
    came from, for the run's provenance."""
    try:
        source = load_source(name)
    except RunDirError as err:
        raise config.ConfigError(f"Experiment.init_loss: {err}") from None
    theirs = (source.meta.get("loss"), len(source.phi))
    if theirs != (meta["loss"], meta["phi_size"]):
        raise config.ConfigError(
            f"Experiment.init_loss = {name!r}: its φ ({theirs[0]}, {theirs[1]:,} parameters) "
            f"does not fit this run's loss ({meta['loss']}, {meta['phi_size']:,} parameters); "
            "a loss starts only from a φ of its own architecture (the same loss bindings)"
        )
    return source.phi, {
        "source": name,
        "path": str(source.path.resolve()),
        "epoch": source.meta.get("epoch"),
        "fitness_mean": source.meta.get("fitness_mean"),
    }


def run_evolution(
    prepared: Prepared,
    executor: Executor,
    echo: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, Any]], None] = lambda m: None,
) -> Any:
    """Evolves, printing a line per epoch and refreshing ``plots/fitness.png``; ``on_epoch``
    gets each finished (checkpointed) epoch's metrics, as ``metrics.jsonl`` records them."""
    prepared.open()
    exp, run, meta = prepared.exp, prepared.run, prepared.meta
    cluster = prepared.launch.where()
    where = cluster.describe()
    if dashboard := getattr(executor, "dashboard", None):  # a Dask cluster that serves one
        echo(f"Dask dashboard: {dashboard}")
    echo(
        f"epgkit: evolving {meta['loss']} (|φ| = {meta['phi_size']:,}) on "
        f"{exp.inner.env_id} with {meta['policy']}: E={exp.epochs} W={exp.inner_loops} "
        f"V={exp.strategy.population} U={exp.inner.steps} on {where} → {run.path}"
    )
    for warning in prepared.warnings:
        echo(f"epgkit: warning: {warning}")
    # Local, SLURM and Kubernetes clusters say how many workers they will hold.
    size = getattr(cluster, "n_workers", None) or getattr(cluster, "workers", None)
    if isinstance(size, int) and (note := idle_workers(exp.inner_loops, exp.batch_size, size)):
        echo(f"epgkit: note: {note}")
    started = time.perf_counter()
    spent = 0.0  # the run's time in epochs, those of earlier sessions too when it was resumed

    def report(m: dict) -> None:
        nonlocal spent
        spent += m["wall_s"]
        echo(
            f"epoch {m['epoch'] + 1:>4}/{exp.epochs}  fitness {m['fitness_mean']:9.2f}"
            f" ± {m['fitness_std']:7.2f}  max {m['fitness_max']:9.2f}  "
            + (f"curve {m['curve_mean']:9.2f}  " if "curve_mean" in m else "")
            + f"α {m['alpha']:.2f}  failed {m['failures']}  {m['wall_s']:5.1f} s  "
            f"({spent:5.0f} s total)"
        )
        plot_fitness([run.path], run.path / "plots" / "fitness.png")
        on_epoch(m)

    # Logs that disagree with the checkpoint are refused; those a crash cut short are completed
    # from it (see epgkit.run.resume for every moment a kill can leave).
    plan_repair(run.path, run.checkpoint()).apply()
    spent = sum(m["wall_s"] for m in run.metrics())
    state = evolve(exp, run, executor, report, meta, prepared.phi0)
    took = f"done in {time.perf_counter() - started:.0f} s"
    if (run.path / BEST_LOSS).exists():
        echo(f"{took}; best loss: {run.path / BEST_LOSS}")
    else:  # every epoch so far was guided (α > 0) or failed
        echo(f"{took}; no epoch without guidance yet, so no best loss: latest φ in "
             f"{run.path / LAST_LOSS}")  # fmt: skip
    return state
