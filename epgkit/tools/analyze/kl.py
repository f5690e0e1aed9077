"""How far each update moves the policy (Figures 16 and 22): KL(π_before ‖ π_after) over the
update's M states, per update, under the learned loss, PPO, and the loss at the start of
evolution (φ₀), on the same held-out tasks from the same initial policy.

The KL is the inner loop's own (``Result.kl``); φ₀ is redrawn from the recorded seed
(``study.initial_phi``). When it cannot be — a loss without φ, or a φ₀ of another size than
the loss — that curve is left out and the JSON says why.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from epgkit.method.inner_loop import Job, Result
from epgkit.tools.analyze.study import Study, initial_phi, save_figure, write_json

LEARNED, PPO, INITIAL = "epg", "ppo", "epg φ₀"
COLORS = {LEARNED: "tab:blue", PPO: "tab:orange", INITIAL: "tab:green"}
SHOWN_RUNS = 4  # columns of the figure; the JSON has every run


def initial_jobs(study: Study) -> tuple[list[Job] | None, dict[str, Any]]:
    """The study's jobs with φ₀, or None and why not."""
    phi0 = initial_phi(study.exp)
    note = {
        "drawn_from": f"SeedSequence([Experiment.seed = {study.exp.seed}, 0]) as evolve "
        "draws epoch 0's φ, with the loss's init_phi"
    }
    if study.source.phi.size == 0:
        return None, {"skipped": "the loss has no φ, so no initial one either"}
    if phi0.size != study.source.phi.size:
        return None, {
            "skipped": f"φ₀ redrawn from the config has {phi0.size} parameters, "
            f"the loss {study.source.phi.size}: not the config it was evolved with"
        }
    return [dataclasses.replace(j, phi=phi0) for j in study.jobs], note


def run(study: Study) -> tuple[dict[str, list[Result]], dict[str, Any]]:
    """Every method on the study's tasks (φ₀ only if it can be redrawn)."""
    no_phi = [dataclasses.replace(j, phi=np.zeros(0, np.float32)) for j in study.jobs]
    results = {LEARNED: study.learned.run(study.jobs), PPO: study.ppo.run(no_phi)}
    jobs0, note = initial_jobs(study)
    if jobs0 is not None:
        results[INITIAL] = study.learned.run(jobs0)
    return results, note


def _mean(rows: list[list[float]]) -> list[float]:
    """Mean over runs per update (runs that stopped early leave their later updates out)."""
    length = max(len(r) for r in rows)
    values = np.full((len(rows), length), np.nan)
    for i, r in enumerate(rows):
        values[i, : len(r)] = r
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, 0).tolist()


def analyze(study: Study) -> dict[str, Any]:
    """Runs every method; writes kl.json and kl.png."""
    results, note = run(study)
    methods = {
        name: {
            "kl_mean": _mean([r.kl for r in rs]),
            "kl": [r.kl for r in rs],
            "episodes": [[list(e) for e in r.episodes] for r in rs],
            "final_returns": [r.fitness for r in rs],
            "failed": [r.failed for r in rs],
        }
        for name, rs in results.items()
    }
    data = {
        **study.info,
        "how": "KL(π_before ‖ π_after) over each update's M states, the inner loop's own",
        "methods": methods,
        "initial_phi": note,
    }
    # The figure first: the json marks a finished analysis (a stopped one is done again).
    plot(data, study.out / "kl.png")
    write_json(study, "kl", data)
    return data


def plot(data: dict[str, Any], path: Path) -> Path:
    """One column per run (the first few): training returns above, each update's KL below."""
    import matplotlib.pyplot as plt

    methods, runs = data["methods"], min(data["runs"], SHOWN_RUNS)
    fig, axes = plt.subplots(2, runs, figsize=(3.4 * runs + 0.6, 5.4), squeeze=False)
    for i in range(runs):
        top, bottom = axes[0, i], axes[1, i]
        positive = True
        for name, m in methods.items():
            episodes = np.array(m["episodes"][i], float).reshape(-1, 2)
            final = m["final_returns"][i]
            label = f"{name}: {final:.1f}" if final is not None and math.isfinite(final) else name
            top.plot(
                episodes[:, 0],
                episodes[:, 1],
                ".-",
                color=COLORS[name],
                markersize=3,
                linewidth=0.8,
                label=label,
            )
            kl = np.array([math.nan if v is None else v for v in m["kl"][i]], float)
            bottom.plot(np.arange(1, len(kl) + 1), kl, color=COLORS[name], linewidth=1)
            positive &= bool((kl[np.isfinite(kl)] > 0).all())
        if positive:
            bottom.set_yscale("log")
        top.set_title(f"task {data['task_seeds'][i]}", fontsize=8)
        top.set_xlabel("env step", fontsize=8)
        bottom.set_xlabel("policy update", fontsize=8)
        top.legend(fontsize=7, title="final return", title_fontsize=7)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("training episode return", fontsize=8)
    axes[1, 0].set_ylabel("KL(before ‖ after)", fontsize=8)
    skipped = data["initial_phi"].get("skipped")
    note = f"; no φ₀ curve: {skipped}" if skipped else ""
    fig.suptitle(
        f"Policy change per update (Figures 16, 22): {data['loss']} on {data['env_id']}{note}",
        fontsize=9,
    )
    return save_figure(fig, path)
