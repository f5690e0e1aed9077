"""How often does a loss beat its baseline on a fresh set of 20 tasks?

Runs ``epgkit train SOURCE --runs 20 --seed S --baseline BASELINE`` once per task seed S (a run
already in OUT/sS is kept), and counts the task sets on which the loss's mean and median final
returns are both above the baseline's ("mean+median"), and those on which, besides, the loss's
mean learning curve reaches the baseline's final mean in at most half the steps ("all three",
the issue's criteria). Writes OUT/passrate_FIRST-LAST.json (one row per task set) and prints
the counts.

    python docs/results/robustness/passrate.py SOURCE FIRST LAST --baseline NAME --out OUT
        [--workers W] [-b BINDING ...]

Task seeds FIRST..LAST (inclusive) give disjoint sets of 20 tasks: each seed draws its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path


def run(args: argparse.Namespace, seed: int) -> dict:
    """Train (unless done) on the 20 tasks of ``seed``; one row of the table."""
    out = Path(args.out) / f"s{seed}"
    if not (out / "summary.json").exists():
        command = ["epgkit", "train", args.source, "--runs", "20", "--seed", str(seed),
                   "--baseline", args.baseline, "--workers", str(args.workers),
                   "--out", str(out)]  # fmt: skip
        for binding in args.bindings:
            command += ["-b", binding]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    methods = json.loads((out / "summary.json").read_text())["methods"]
    loss, base = methods["epg"], methods[args.baseline]
    reach = loss["steps_to_reach"].get(args.baseline)
    wins = loss["final_mean"] > base["final_mean"] and loss["final_median"] > base["final_median"]
    return {"seed": seed, "mean": loss["final_mean"], "median": loss["final_median"],
            "baseline_mean": base["final_mean"], "baseline_median": base["final_median"],
            "steps_to_baseline_final_mean": reach, "steps": loss["env_steps"],
            "mean_and_median": wins,
            "all_three": wins and reach is not None and reach <= loss["env_steps"] / 2}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("--baseline", default="ppo")
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("-b", dest="bindings", action="append", default=[])
    args = parser.parse_args()
    rows = [run(args, s) for s in range(args.first, args.last + 1)]
    n = len(rows)
    mm = sum(r["mean_and_median"] for r in rows)
    all3 = sum(r["all_three"] for r in rows)
    result = {"source": args.source, "baseline": args.baseline, "bindings": args.bindings,
              "seeds": [args.first, args.last], "mean_and_median": mm, "all_three": all3,
              "sets": n, "rows": rows}  # fmt: skip
    Path(args.out, f"passrate_{args.first}-{args.last}.json").write_text(
        json.dumps(result, indent=1) + "\n"
    )
    mean = statistics.mean
    given = "".join(f' -b "{b}"' for b in args.bindings)
    print(
        f"{args.source}{given}: {n} sets of 20 tasks (seeds {args.first}-"
        f"{args.last}); mean+median above {args.baseline}'s on {mm}, all three on {all3}"
    )
    print(
        f"  averages: loss {mean(r['mean'] for r in rows):.2f} / "
        f"{mean(r['median'] for r in rows):.2f}, {args.baseline} "
        f"{mean(r['baseline_mean'] for r in rows):.2f} / "
        f"{mean(r['baseline_median'] for r in rows):.2f} (mean / median)"
    )
    lost = [r["seed"] for r in rows if not r["all_three"]]
    print(f"  sets missing a criterion: {lost or 'none'}")


if __name__ == "__main__":
    main()
