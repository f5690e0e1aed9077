"""What a test-time training reports: return curves, final-return statistics over runs
(IQM and probability of improvement with bootstrap CIs, ``epgkit.run.stats``), and its files
(``summary.json``, ``curves.jsonl``, ``returns.png``, ``kl.png``) and table.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from epgkit.method.inner_loop import InnerLoop, Result
from epgkit.run.paths import naming
from epgkit.run.rundir import json_safe
from epgkit.run.stats import (
    BOOTSTRAP_REPS,
    BOOTSTRAP_SEED,
    CI_LEVEL,
    bootstrap_ci,
    iqm,
    probability_of_improvement,
)

#: The evolved loss's name among the methods (the baselines have theirs).
LEARNED = "epg"


def curve(result: Result, update_every: int, steps: int) -> list[dict[str, Any]]:
    """Return against env steps: after each update, the last finished training episode's
    return; the final point is the trained policy's evaluation return (the fitness). A failed
    run's curve is NaN from the update it stopped at: it is left out, not carried on."""
    points, episodes, i, last = [], result.episodes, 0, math.nan
    for u in range(steps // update_every):
        step = (u + 1) * update_every
        while i < len(episodes) and episodes[i][0] <= step:
            last = episodes[i][1]
            i += 1
        if result.failed is not None and u >= len(result.kl):
            last = math.nan
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
        "failed_because": dict(Counter(r.failed for r in results if r.failed is not None)),
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
    bootstrap CI over tasks: the runs are paired by task, and a resample keeps the pairs.

    Beside it, the tasks on which X ends strictly above Y (same task, same initial policy)
    among those on which neither failed: P(X > Y) also compares runs on different tasks.
    """
    if x["task_seeds"] != y["task_seeds"]:
        raise ValueError("the two methods were not trained on the same tasks in the same order")
    finals_x, finals_y = np.array(x["finals"], float), np.array(y["finals"], float)
    ci = bootstrap_ci(probability_of_improvement, finals_x, finals_y, paired=True)
    both = np.isfinite(finals_x) & np.isfinite(finals_y)
    return {"p": float(probability_of_improvement(finals_x, finals_y)), "ci": list(ci),
            "tasks_won": int((finals_x[both] > finals_y[both]).sum()),
            "tasks": int(both.sum())}  # fmt: skip


def steps_to_reach(runs: list[list[dict[str, Any]]], target: float) -> int | None:
    """The first env step at which the mean return over runs reaches ``target`` (None if never).

    The mean is over runs at each update (the last finished training episode's return), and
    the final point is the mean final evaluation return. At the last step only that final
    point counts: the budget's end is judged by the evaluation, as the table is.
    """
    if not math.isfinite(target):
        return None
    end = runs[0][-1]["env_step"]
    for i, point in enumerate(runs[0]):
        if point["env_step"] == end and not point.get("final"):
            continue
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
    methods = summary["methods"]
    for m, s in methods.items():
        if s["failures"]:
            why = "; ".join(f"{n} × {reason}" for reason, n in s.get("failed_because", {}).items())
            rows.append(f"{m}: {s['failures']} of {len(s['finals'])} runs failed and are left "
                        f"out" + (f" ({why})" if why else ""))  # fmt: skip
    names = list(methods)
    for m, s in methods.items():
        for b, poi in s["probability_of_improvement"].items():
            if m != LEARNED and names.index(b) < names.index(m):
                continue  # 1 − P(b > m), printed already (summary.json keeps both)
            lo, hi = poi["ci"]
            won = f"; ahead on {poi['tasks_won']} of {poi['tasks']} tasks" if "tasks" in poi else ""
            rows.append(f"P({m} > {b}) = {poi['p']:.2f}, {CI_LEVEL:.0%} CI [{lo:.2f}, {hi:.2f}]"
                        f"{won}")  # fmt: skip
    # How soon the learned loss gets where each baseline ends: the paper's learning curves
    # compare speed as well as final return.
    reach = methods.get(LEARNED, {}).get("steps_to_reach", {})
    for b in (b for b in methods if b != LEARNED and b in reach):
        target, budget = methods[b]["final_mean"], methods[LEARNED]["env_steps"]
        if not math.isfinite(target):
            rows.append(f"{b} has no final mean to reach: every run of it failed")
            continue
        at = (
            f"within {budget:,} steps"
            if reach[b] is None
            else f"at step {reach[b]:,} of {budget:,}"
        )
        verb = "never reaches" if reach[b] is None else "reaches"
        final = methods[LEARNED]["final_mean"]
        # The curve is training episodes until the end: it may touch the target and fall back.
        below = (
            f", then ends below it ({final:.2f})" if reach[b] is not None and final < target else ""
        )
        rows.append(f"{LEARNED} {verb} {b}'s final mean ({target:.2f}) {at}{below}")
    return "\n".join(rows)
