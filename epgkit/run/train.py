"""Test-time training (Algorithm 2): train fresh policies with an evolved loss on new tasks,
and the same inner loop with hand-designed losses (PPO, DPO, REINFORCE) on the same tasks.

Task seeds are drawn at or above 2**31, disjoint from every task seed evolution draws. The
learned loss runs with α = 0 (no guidance, no reward input where the experiment hides it);
each baseline trains on exactly the same task seeds and inner-loop seeds, hence from the same
initial policy, with the same architecture, normalization and step budget.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from epgkit.method.evolve import TASK_SEED_LIMIT
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job, Result, checked, run_batch
from epgkit.method.losses import DPOLoss, PPOLoss
from epgkit.run import config
from epgkit.run.cluster import Executor
from epgkit.run.rundir import RunDirError
from epgkit.run.sources import Source
from epgkit.run.testtime import TestTime  # noqa: F401  (train's configurable)
from epgkit.run.train_summary import (  # noqa: F401  (train's reports, under their old names)
    LEARNED,
    curve,
    improvement,
    steps_to_reach,
    summarize,
    table,
    with_statistics,
    write_outputs,
)

#: Baselines offered when a loss's config declares none (parsed before that config).
DEFAULT_BASELINES = config.GIN_DIR / "baselines" / "defaults.gin"


def build(source: Source, bindings: Sequence[str] = ()) -> Experiment:
    """The experiment the loss was evolved with, then the user's bindings (gin holds all of
    it afterwards, ``TestTime`` and ``Launch`` included)."""
    # The operative config is a gin text, parsed after the default baselines and before the
    # user's bindings, so theirs win. The evolution's run directory is not the test's. A policy
    # left to the action space (None) is chosen as in evolution, from the evolution's env.
    operative = source.meta["operative_config"]
    try:
        config.parse([DEFAULT_BASELINES], [operative, "Launch.run_dir = None", *bindings])
    except config.ConfigError as err:
        missing = re.search(r"No module named '([\w.]+)'", str(err))
        recorded = source.meta.get("user_modules", {}).get(missing[1] if missing else "")
        if recorded is None:
            raise
        raise config.ConfigError(
            f"the loss's config imports {missing[1]}, which is not importable here; it was "
            f"evolved with {recorded['file']}: run from that file's folder, or add the folder "
            "to PYTHONPATH"
        ) from None
    return config.experiment()


def methods(
    exp: Experiment, baselines: Sequence[str], env_id: str | None, steps: int | None
) -> dict[str, InnerLoop]:
    """Method name → inner loop, all with the same env and step budget."""
    known = dict(exp.baselines)  # gin's: the config's own, or baselines/defaults.gin
    if "dpo" not in known and "ppo" in known:  # e.g. a loss file recorded before DPO
        known["dpo"] = dpo_like(known["ppo"])
    unknown = [b for b in baselines if b not in known]
    if unknown:
        raise config.ConfigError(
            f"unknown baseline {', '.join(unknown)}; known: {', '.join(known)}"
        )
    # Pinned to the evolution's env, the loss keeps its inputs (reward, task signal) on any
    # test env; ``resolve`` is optional, a loss without it is used as it is.
    resolve = getattr(exp.inner.loss, "resolve", None)
    loss = resolve(exp.inner.dims()) if resolve is not None else exp.inner.loss
    learned = dataclasses.replace(exp.inner, loss=loss)
    # Baselines train the learned loss's policy in its env: loss files record theirs under
    # their scope (``ppo/GaussianMLP.hidden``, ``ppo/InnerLoop.env_kwargs``), which an unscoped
    # test-time binding (Figure 17's ``GaussianMLP.hidden = (128, 128)``, a reward's
    # ``InnerLoop.env_kwargs``) would not reach. They start from a random θ: an evolved θ₀
    # (EPG+I, PPO+I) belongs to the loss file, and a baseline scope that a tuning fragment adds
    # (``ppo_gl/``) would otherwise inherit ``InnerLoop.evolve_init = True``.
    same_policy = {b: dataclasses.replace(known[b], policy=learned.policy,
                                          env_kwargs=learned.env_kwargs, evolve_init=False)
                   for b in baselines}  # fmt: skip
    loops = {LEARNED: learned, **same_policy}
    changes: dict[str, Any] = {}
    if env_id is not None:
        changes["env_id"] = env_id
    if steps is not None:
        changes["steps"] = steps
    try:
        loops = {name: dataclasses.replace(loop, **changes) for name, loop in loops.items()}
        learns = {b: loops[b].phi_size() for b in baselines}
    except ValueError as err:
        raise config.ConfigError(str(err)) from None
    for name, size in learns.items():
        if size:  # it would be handed the evolved loss's φ, or fail on its size mid-run
            raise config.ConfigError(
                f"baseline {name!r}: {type(loops[name].loss).__name__} has {size:,} parameters "
                "of its own (φ), but a baseline is a hand-designed loss with none (phi_size 0)"
            )
    return loops


def dpo_like(ppo: InnerLoop) -> InnerLoop:
    """DPO in a PPO baseline's inner loop, with its γ, λ, value net and entropy bonus: the
    ``dpo`` baseline of a config whose baselines name ``ppo`` but not ``dpo``."""
    shared = ("gamma", "lam", "value_hidden", "value_coef", "entropy_coef", "normalize_advantages")
    if isinstance(ppo.loss, PPOLoss):
        loss = DPOLoss(**{name: getattr(ppo.loss, name) for name in shared})
    else:
        loss = DPOLoss()
    return dataclasses.replace(ppo, loss=loss, guide=None)


def check_fits(inner: InnerLoop, source: Source) -> None:
    """Refuses a loss whose φ does not fit the configured architecture and env."""
    try:
        expected = inner.phi_size()
    except ValueError as err:
        raise RunDirError(f"{source.path}: this loss cannot run on {inner.env_id}: {err}") from None
    if expected != source.phi.size:
        dims = inner.dims()
        raise RunDirError(
            f"{source.path}: φ has {source.phi.size} parameters but {type(inner.loss).__name__} "
            f"on {inner.env_id} (obs {dims.obs_dim}, actions {dims.act_dim}) needs {expected}; "
            f"the loss was evolved on {source.meta.get('env_id')} with obs "
            f"{source.meta.get('obs_dim')}, actions {source.meta.get('act_dim')}"
        )


def test_jobs(phi: np.ndarray, runs: int, seed: int) -> list[Job]:
    """K held-out tasks (seeds ≥ 2**31) and inner-loop seeds, the same for every method."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57]))
    task_seeds = TASK_SEED_LIMIT + rng.integers(0, TASK_SEED_LIMIT, runs)
    seeds = rng.integers(0, 2**63, runs)
    return [Job(phi, 0.0, int(t), int(s), i, 0) for i, (t, s) in
            enumerate(zip(task_seeds, seeds, strict=True))]  # fmt: skip


def _batches(
    loops: dict[str, InnerLoop], jobs: list[Job], batch_size: int
) -> list[tuple[str, InnerLoop, list[Job]]]:
    """Each method's jobs (a baseline's without φ) cut into batches run in lockstep."""
    batches = []
    for name, loop in loops.items():
        method_jobs = jobs if name == LEARNED else [
            dataclasses.replace(j, phi=np.zeros(0, np.float32)) for j in jobs]  # fmt: skip
        for i in range(0, len(jobs), batch_size):
            batches.append((name, loop, method_jobs[i : i + batch_size]))
    return batches


def run_methods(
    loops: dict[str, InnerLoop], jobs: list[Job], batch_size: int, executor: Executor
) -> dict[str, list[Result]]:
    """Runs every method on the same jobs, all batches submitted at once."""
    batches = _batches(loops, jobs, batch_size)
    done = checked(executor.map(run_batch, [(loop, part) for _, loop, part in batches]))
    out: dict[str, list[Result]] = {name: [] for name in loops}
    for (name, _, _), results in zip(batches, done, strict=True):
        out[name].extend(results)
    return out


def trained_policies(
    loops: dict[str, InnerLoop], jobs: list[Job], batch_size: int
) -> dict[str, list[Result]]:
    """``run_methods`` in this process, keeping each final policy (``Result.policy``): the
    same batches, so the same final returns, for a script that then looks at the policies."""
    batches = _batches(loops, jobs, batch_size)
    done = checked([run_batch(loop, part, True) for _, loop, part in batches])
    out: dict[str, list[Result]] = {name: [] for name in loops}
    for (name, _, _), results in zip(batches, done, strict=True):
        out[name].extend(results)
    return out
