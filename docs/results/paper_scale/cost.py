"""What the paper's scale (Table 1) would cost per task family, from a measured inner-loop rate.

For each family's paper config (gin/<family>.gin), times K = 8 lockstep inner loops with a
random loss of the paper's form, unguided (α = 0, as in nine epochs of ten), on one core. The
rate is the difference of two runs, of `--updates` and of 3 × `--updates` updates, which
cancels the cost of building the tasks; the final evaluation is cut to one step (its episodes'
length depends on what the policy learned: a fall ends a Hopper's). An inner loop's cost per
training step does not change with U. Prints env steps per second per core, the
core-hours of one paper epoch (W × U training steps), and the wall time of the paper's E
epochs on 2 cores and on W / K cores (each running K of the W inner loops, as measured) at
90 % parallel efficiency (benchmarks/scale.py measures ≥ 90 % for a paper-scale epoch).

    python docs/results/paper_scale/cost.py --out docs/results/paper_scale/cost.md
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from epgkit.method.experiment import Experiment
from epgkit.method.jobs import Job
from epgkit.run.config import build, parse, with_policies

FAMILIES = ["randomhopper", "randomwalker", "randomreacher", "directionalhopper",
            "directionalhalfcheetah", "goalant", "fetch"]  # fmt: skip
EFFICIENCY = 0.9


def measure(family: str, k: int, updates: int) -> dict[str, float]:
    """One family's rate (steps per second on one core) and its Table 1 scale."""
    parse([f"{family}.gin"])
    exp = with_policies(build(Experiment))
    inner = exp.inner
    phi = inner.init_phi(np.random.default_rng(0))
    jobs = [Job(phi, 0.0, task_seed=i, seed=i, index=i) for i in range(k)]
    seconds = {}
    for n in (updates, 3 * updates):
        loop = replace(inner, steps=n * inner.update_every, eval_episodes=1, eval_max_steps=1)
        loop.run(jobs[:1])  # warm-up: imports, torch kernels
        start = time.perf_counter()
        loop.run(jobs)
        seconds[n] = time.perf_counter() - start
    rate = k * 2 * updates * inner.update_every / (seconds[3 * updates] - seconds[updates])
    return {"rate": rate, "W": exp.inner_loops, "U": inner.steps, "E": exp.epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8, help="inner loops in the timed batch")
    parser.add_argument("--updates", type=int, default=8, help="updates timed per inner loop")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = ["| family | steps/s per core | W × U (paper epoch) | core-hours per epoch "
            "| E epochs on 2 cores | E epochs on W / K cores |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for family in FAMILIES:
        m = measure(family, args.k, args.updates)
        steps = m["W"] * m["U"]
        core_hours = steps / m["rate"] / 3600
        two = m["E"] * core_hours / 2 / 24
        cores = m["W"] // args.k
        cluster = m["E"] * core_hours / (cores * EFFICIENCY)
        rows.append(f"| {family} | {m['rate']:,.0f} | {m['W']} × {m['U']:,} = {steps:,} "
                    f"| {core_hours:.2f} | {m['E']:,} epochs: {two:,.0f} days "
                    f"| {cluster:,.1f} h on {cores} |")  # fmt: skip
        print(rows[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
