"""Test-time training (Algorithm 2): train fresh policies with an evolved loss on new tasks,
and the same inner loop with hand-designed losses (PPO, DPO, REINFORCE) on the same tasks.

Task seeds are drawn at or above 2**31, disjoint from every task seed evolution draws. The
learned loss runs with α = 0 (no guidance, no reward input where the experiment hides it);
each baseline trains on exactly the same task seeds and inner-loop seeds, hence from the same
initial policy, with the same architecture, normalization and step budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from epgkit.method.evolve import TASK_SEED_LIMIT
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job, Result, checked, run_batch
from epgkit.method.losses import DPOLoss, PPOLoss, ReinforceLoss
from epgkit.run import config, zoo
from epgkit.run.cluster import Executor
from epgkit.run.paths import naming
from epgkit.run.rundir import BEST_LOSS, LAST_LOSS, RunDirError, json_safe, load_loss
from epgkit.run.stats import (
    BOOTSTRAP_REPS,
    BOOTSTRAP_SEED,
    CI_LEVEL,
    bootstrap_ci,
    iqm,
    probability_of_improvement,
)

LEARNED = "epg"


@dataclasses.dataclass(frozen=True)
class Source:
    """An evolved loss and the config it was evolved with."""

    phi: np.ndarray
    meta: dict[str, Any]
    path: Path


def load_source(source: str) -> Source:
    """A loss from a run directory (its best loss), a loss file, or the zoo (``zoo:NAME``)."""
    path = zoo.path(source) if source.startswith(zoo.PREFIX) else Path(source)
    if path.is_dir():
        for name in (BEST_LOSS, LAST_LOSS):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise RunDirError(f"{source} holds no {BEST_LOSS} or {LAST_LOSS}: not an epgkit run")
    elif not path.is_file():
        raise RunDirError(f"{source}: no such run directory or loss file")
    phi, meta = load_loss(path)
    if not isinstance(meta.get("operative_config"), str):
        raise RunDirError(f"{path} records no operative config; cannot rebuild its loss")
    return Source(phi, meta, path)


def build(source: Source, bindings: Sequence[str] = ()) -> Experiment:
    """The experiment the loss was evolved with, then the user's bindings."""
    # The operative config is a gin text; parsed first, so the user's bindings win. A policy
    # left to the action space (None) is chosen as in evolution, from the evolution's env.
    config.parse([], [source.meta["operative_config"], *bindings])
    return config.with_policies(config.build(Experiment))


def methods(
    exp: Experiment, baselines: Sequence[str], env_id: str | None, steps: int | None
) -> dict[str, InnerLoop]:
    """Method name → inner loop, all with the same env and step budget."""
    # Configs without baselines (not including base.gin) get PPO, DPO and REINFORCE untuned.
    known = dict(exp.baselines) or {
        "ppo": dataclasses.replace(exp.inner, loss=PPOLoss(), guide=None),
        "dpo": dataclasses.replace(exp.inner, loss=DPOLoss(), guide=None),
        "reinforce": dataclasses.replace(exp.inner, loss=ReinforceLoss(), guide=None),
    }
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
    # Baselines train the learned loss's policy: older loss files record theirs under their
    # scope (``ppo/GaussianMLP.hidden``), which an unscoped test-time binding (Figure 17's
    # ``GaussianMLP.hidden = (128, 128)``) would not reach.
    same_policy = {b: dataclasses.replace(known[b], policy=learned.policy) for b in baselines}
    loops = {LEARNED: learned, **same_policy}
    changes: dict[str, Any] = {}
    if env_id is not None:
        changes["env_id"] = env_id
    if steps is not None:
        changes["steps"] = steps
    try:
        return {name: dataclasses.replace(loop, **changes) for name, loop in loops.items()}
    except ValueError as err:
        raise config.ConfigError(str(err)) from None


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


def run_methods(
    loops: dict[str, InnerLoop], jobs: list[Job], batch_size: int, executor: Executor
) -> dict[str, list[Result]]:
    """Runs every method on the same jobs, all batches submitted at once."""
    batches, owners = [], []
    for name, loop in loops.items():
        method_jobs = jobs if name == LEARNED else [
            dataclasses.replace(j, phi=np.zeros(0, np.float32)) for j in jobs]  # fmt: skip
        for i in range(0, len(jobs), batch_size):
            batches.append((loop, method_jobs[i : i + batch_size]))
            owners.append(name)
    out: dict[str, list[Result]] = {name: [] for name in loops}
    for name, results in zip(owners, checked(executor.map(run_batch, batches)), strict=True):
        out[name].extend(results)
    return out


def curve(result: Result, update_every: int, steps: int) -> list[dict[str, Any]]:
    """Return against env steps: after each update, the last finished training episode's
    return; the final point is the trained policy's evaluation return (the fitness)."""
    points, episodes, i, last = [], result.episodes, 0, math.nan
    for u in range(steps // update_every):
        step = (u + 1) * update_every
        while i < len(episodes) and episodes[i][0] <= step:
            last = episodes[i][1]
            i += 1
        kl = result.kl[u] if u < len(result.kl) else math.nan
        points.append({"update": u, "env_step": step, "return": last, "kl": kl})
    points.append({"update": None, "env_step": steps, "return": result.fitness, "kl": None,
                   "final": True})  # fmt: skip
    return points


def summarize(results: list[Result], loop: InnerLoop) -> dict[str, Any]:
    """Final-return statistics of one method."""
    finals = np.array([r.fitness for r in results])
    ok = finals[np.isfinite(finals)]
    q25, q75 = np.percentile(ok, [25, 75]) if len(ok) else (math.nan, math.nan)
    return {
        "final_mean": float(ok.mean()) if len(ok) else math.nan,
        "final_median": float(np.median(ok)) if len(ok) else math.nan,
        "final_iqr": [float(q25), float(q75)],
        "finals": [float(f) for f in finals],
        "failures": int(sum(r.failed is not None for r in results)),
        "env_steps": int(loop.steps),
        "update_every": loop.update_every,
        "task_seeds": [r.task_seed for r in results],
        "seeds": [r.seed for r in results],
    }


def with_statistics(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with, per method, the interquartile mean of the final returns and its
    bootstrap CI, and the probability of improvement over each baseline (``epgkit.run.stats``).

    Only ``finals`` and ``task_seeds`` are read, so an older ``summary.json`` gets them too.
    """
    methods = summary["methods"]
    out = {}
    for m, s in methods.items():
        finals = np.array(s["finals"], float)  # a failed run: −inf, or null in a JSON file
        ok = finals[np.isfinite(finals)]
        baselines = [b for b in methods if b not in (m, LEARNED)]
        out[m] = {
            **s,
            "final_iqm": float(iqm(ok)),
            "final_iqm_ci": list(bootstrap_ci(iqm, ok)),
            "probability_of_improvement": {b: improvement(s, methods[b]) for b in baselines},
        }
    bootstrap = {"reps": BOOTSTRAP_REPS, "level": CI_LEVEL, "seed": BOOTSTRAP_SEED,
                 "paired_by_task": True}  # fmt: skip
    return {**summary, "methods": out, "bootstrap": bootstrap}


def improvement(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    """P(X > Y) + ½ P(X = Y) between the final returns of two methods' summaries, with its
    bootstrap CI over tasks: the runs are paired by task, and a resample keeps the pairs."""
    if x["task_seeds"] != y["task_seeds"]:
        raise ValueError("the two methods were not trained on the same tasks in the same order")
    finals_x, finals_y = np.array(x["finals"], float), np.array(y["finals"], float)
    ci = bootstrap_ci(probability_of_improvement, finals_x, finals_y, paired=True)
    return {"p": float(probability_of_improvement(finals_x, finals_y)), "ci": list(ci)}


def steps_to_reach(runs: list[list[dict[str, Any]]], target: float) -> int | None:
    """The first env step at which the mean return over runs reaches ``target`` (None if never).

    The mean is over runs at each update (the last finished training episode's return), and
    the final point is the mean final evaluation return.
    """
    if not math.isfinite(target):
        return None
    for i, point in enumerate(runs[0]):
        values = [r[i]["return"] for r in runs if math.isfinite(r[i]["return"])]
        if values and np.mean(values) >= target:
            return int(point["env_step"])
    return None


def write_outputs(
    out: Path, loops: dict[str, InnerLoop], results: dict[str, list[Result]],
    info: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """summary.json, curves.jsonl, returns.png and kl.png in ``out``."""
    from epgkit.run.plotting import plot_kl, plot_returns

    out.mkdir(parents=True, exist_ok=True)
    summary = {"methods": {m: summarize(results[m], loops[m]) for m in loops}, **info}
    with naming(out / "summary.json"):
        (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    curves = {m: [curve(r, loops[m].update_every, loops[m].steps) for r in results[m]]
              for m in loops}  # fmt: skip
    with naming(out / "curves.jsonl"), open(out / "curves.jsonl", "w") as f:
        for m, runs in curves.items():
            for r, points in zip(results[m], runs, strict=True):
                for p in points:
                    row = {"method": m, "run": r.index, "task_seed": r.task_seed, **p}
                    f.write(json.dumps(json_safe(row)) + "\n")
    for m, stats in summary["methods"].items():
        stats["steps_to_reach"] = {
            other: steps_to_reach(curves[m], summary["methods"][other]["final_mean"])
            for other in loops
        }
    summary = with_statistics(summary)
    with naming(out / "summary.json"):
        (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    iqms = {m: (s["final_iqm"], *s["final_iqm_ci"]) for m, s in summary["methods"].items()}
    plot_returns(curves, out / "returns.png", seed=info.get("seed", 0), iqm=iqms)
    plot_kl(curves, out / "kl.png")
    return summary


def table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width text table, then each probability of improvement."""
    ci = f"IQM [{CI_LEVEL:.0%} CI]"
    rows = [f"{'method':<12}{'mean':>10}{'median':>10}{'IQR':>22}{ci:>28}{'failed':>8}"]
    for m, s in summary["methods"].items():
        iqr = f"[{s['final_iqr'][0]:.1f}, {s['final_iqr'][1]:.1f}]"
        lo, hi = s["final_iqm_ci"]
        iqm_ci = f"{s['final_iqm']:.2f} [{lo:.2f}, {hi:.2f}]"
        rows.append(f"{m:<12}{s['final_mean']:>10.2f}{s['final_median']:>10.2f}{iqr:>22}"
                    f"{iqm_ci:>28}{s['failures']:>8}")  # fmt: skip
    for m, s in summary["methods"].items():
        for b, poi in s["probability_of_improvement"].items():
            lo, hi = poi["ci"]
            rows.append(f"P({m} > {b}) = {poi['p']:.2f}, {CI_LEVEL:.0%} CI [{lo:.2f}, {hi:.2f}]")
    return "\n".join(rows)
