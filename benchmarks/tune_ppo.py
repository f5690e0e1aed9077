"""Tune the PPO baseline for a shipped or evolved loss's test-time setting, on tuning tasks.

The comparison in docs/results.md is only fair if PPO is tuned at the same step budget and
in the same inner loop (same env, U, policy, normalization). This grid-searches PPO over
learning rate, rollout length M, minibatch size and passes (PPO's epochs) at γ 0.99 / λ 0.95,
and, with --gamma-lambda, over γ and λ as well. Tuning tasks come from --seed (default 1);
the final comparison uses `epgkit train --seed 0`, whose tasks are different.

    python benchmarks/tune_ppo.py zoo:pointgoal --out docs/ppo_tuning_pointgoal.md
    python benchmarks/tune_ppo.py zoo:pointgoal --gamma-lambda --rollouts 32 128 --passes 4 10 \
        --full-batch-only --out docs/ppo_tuning_pointgoal_gl.md
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time

import numpy as np

from epgkit import train as tt
from epgkit.cluster import connect
from epgkit.losses import PPOLoss


def grid(inner, gamma_lambda: bool, lrs, rollouts, passes, full_batch_only: bool):
    """Every PPO setting of the grid, as (description, inner loop)."""
    gls = list(itertools.product((0.7, 0.9, 0.99), (0.8, 0.95))) if gamma_lambda else [(0.99, 0.95)]
    for (gamma, lam), lr, m, p in itertools.product(gls, lrs, rollouts, passes):
        for mb in [m] if full_batch_only else sorted({32, m}):
            if inner.steps % m:
                continue
            loop = dataclasses.replace(
                inner, loss=PPOLoss(gamma=gamma, lam=lam), guide=None, lr=lr, update_every=m,
                buffer_size=max(m, 32), minibatch=mb, passes=p)  # fmt: skip
            yield {"gamma": gamma, "lam": lam, "lr": lr, "rollout": m, "minibatch": mb,
                   "passes": p}, loop  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="run directory, loss file or zoo:NAME")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="seed of the tuning tasks")
    parser.add_argument("--gamma-lambda", action="store_true", help="tune γ and λ too")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--rollouts", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--full-batch-only", action="store_true", help="minibatch = rollout")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True, help="Markdown table to write")
    args = parser.parse_args()

    source = tt.load_source(args.source)
    inner = tt.methods(tt.build(source), [], None, None)[tt.LEARNED]
    jobs = tt.test_jobs(np.zeros(0, np.float32), args.runs, args.seed)
    points = list(grid(inner, args.gamma_lambda, args.lrs, args.rollouts, args.passes,
                       args.full_batch_only))  # fmt: skip
    started = time.perf_counter()
    with connect(args.workers) as executor:
        loops = {str(i): loop for i, (_, loop) in enumerate(points)}
        results = tt.run_methods(loops, jobs, 10, executor)
    rows = []
    for i, (setting, _) in enumerate(points):
        finals = np.array([r.fitness for r in results[str(i)]])
        rows.append({**setting, "mean": float(finals.mean()), "median": float(np.median(finals))})
    rows.sort(key=lambda r: -r["mean"])
    lines = [
        f"# PPO tuning for `{args.source}` on {inner.env_id}",
        "",
        f"U = {inner.steps:,} env steps, {args.runs} tuning tasks (`--seed {args.seed}`, "
        "held out from evolution and from the final test), final return = mean of "
        f"{inner.eval_episodes} sampled episodes of the final policy. {len(points)} settings "
        f"in {time.perf_counter() - started:.0f} s. Command: `python "
        + " ".join(["benchmarks/tune_ppo.py", *sys.argv[1:]])
        + "`.",
        "",
        "| γ | λ | lr | rollout M | minibatch | passes | mean | median |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['gamma']} | {r['lam']} | {r['lr']:g} | {r['rollout']} | {r['minibatch']} | "
              f"{r['passes']} | {r['mean']:.2f} | {r['median']:.2f} |" for r in rows]  # fmt: skip
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    best = rows[0]
    print("\n".join(lines[:12]))
    print("best: " + " ".join(f"{k}={v}" for k, v in best.items()))


if __name__ == "__main__":
    main()
