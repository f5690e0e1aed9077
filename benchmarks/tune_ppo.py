"""Tune the PPO baseline on tuning tasks, for an experiment, an env id or an evolved loss.

The comparisons in docs/results.md are only fair if PPO is tuned at the same step budget and
in the same inner loop (same env and reward, U, policy, normalization). This grid-searches PPO
over learning rate, rollout length M, minibatch size, passes (PPO's epochs), γ and λ, on
tuning tasks drawn from --seed (1 by convention): like every test task they are held out from
evolution (task seeds ≥ 2**31), and the script refuses a seed whose tasks meet the final
test's (`epgkit train --seed 0`). Inner loops run on Dask workers (--workers, --scheduler).
It writes the table (--out) and the best setting as a gin fragment of scoped ``ppo/``
bindings (--gin-out) that `epgkit train` takes on top of a loss's config:

    python benchmarks/tune_ppo.py gin/randomhopper_small.gin --out docs/ppo_tuning_randomhopper.md \
        --gin-out gin/baselines/randomhopper.gin
    epgkit train RUN_DIR -b "include 'baselines/randomhopper.gin'" --baseline ppo

The target is a gin experiment (a path or a shipped name), a registered env id (base.gin's
inner loop on that env), or an evolved loss (run directory, loss file or zoo:NAME; its
recorded config); -b adds gin bindings on top, --steps sets the budget U:

    python benchmarks/tune_ppo.py epgkit/RandomWalker-v0 --steps 32768 --out walker.md
    python benchmarks/tune_ppo.py zoo:pointgoal --gamma-lambda --rollouts 32 128 --passes 4 10 \
        --full-batch-only --out docs/ppo_tuning_pointgoal_gl.md

The best mean of many settings on a few noisy tasks is partly luck (the winner's curse): the
chosen setting scores lower on new tasks than in its tuning table. --confirm K runs the K best
settings again on --confirm-runs other tasks (--confirm-seed, 3 by convention, disjoint from
the tuning and the test tasks) and picks the best of those by its confirmation mean:

    python benchmarks/tune_ppo.py gin/randomwalker_velocity_small.gin --lrs 1e-3 --rollouts 128 \
        --minibatches 64 --passes 10 --gamma-lambda --confirm 5 --out walker_gl.md
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from epgkit.envs.ids import takes_task_seed
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.method.losses import PPOLoss
from epgkit.run import config, zoo
from epgkit.run import train as tt
from epgkit.run.cluster import connect
from epgkit.run.sources import load_source

#: --gamma-lambda: the (γ, λ) grid of docs/results.md's `ppo_gl` baseline.
GAMMA_LAMBDA = ((0.7, 0.9, 0.99), (0.8, 0.95))
#: Test runs whose task seeds the tuning tasks must avoid (`epgkit train --runs` ≤ this).
TEST_RUNS_CHECKED = 1000


def setting(target: str, bindings: Sequence[str] = ()) -> InnerLoop:
    """The inner loop PPO is tuned in: an evolved loss's, a gin experiment's, or base.gin's
    on an env id."""
    if target.startswith(zoo.PREFIX) or (Path(target).exists() and not target.endswith(".gin")):
        return tt.build(load_source(target), bindings).inner
    try:
        config.resolve(target)
    except config.ConfigError:
        if target.endswith(".gin"):
            raise
        takes_task_seed(target)  # an unknown id raises, naming close registered ids
        config.parse(["base.gin"], [f"InnerLoop.env_id = '{target}'", *bindings])
    else:
        config.parse([target], bindings)
    return config.with_policies(config.build(Experiment)).inner


def tuning_jobs(runs: int, seed: int, test_seed: int) -> list[Job]:
    """``runs`` tuning tasks from ``seed``, none of them a task of ``epgkit train --seed
    test_seed`` (nor of evolution: test tasks lie at or above 2**31)."""
    no_phi = np.zeros(0, np.float32)
    jobs = tt.test_jobs(no_phi, runs, seed)
    test = {j.task_seed for j in tt.test_jobs(no_phi, max(runs, TEST_RUNS_CHECKED), test_seed)}
    if seed == test_seed or test & {j.task_seed for j in jobs}:
        raise SystemExit(
            f"--seed {seed} draws tasks of the final test (`epgkit train --seed {test_seed}`); "
            "tune on other tasks (--seed 1 by convention)."
        )
    return jobs


def confirmation_jobs(runs: int, seed: int, tuning: list[Job], test_seed: int) -> list[Job]:
    """``runs`` tasks from ``seed`` to re-run the best settings on, sharing no task with the
    tuning tasks nor with the final test."""
    jobs = tuning_jobs(runs, seed, test_seed)
    if {j.task_seed for j in jobs} & {j.task_seed for j in tuning}:
        raise SystemExit(f"--confirm-seed {seed} draws tuning tasks; confirm on other tasks "
                         "(--confirm-seed 3 by convention).")  # fmt: skip
    return jobs


@dataclasses.dataclass(frozen=True)
class Grid:
    """The PPO settings to try; a rollout M that does not divide U is skipped."""

    lrs: Sequence[float]
    rollouts: Sequence[int]
    minibatches: Sequence[int]  # each rollout also tries its full batch (minibatch = M)
    passes: Sequence[int]
    gammas: Sequence[float]
    lams: Sequence[float]
    full_batch_only: bool = False

    def points(self, inner: InnerLoop) -> Iterator[tuple[dict[str, Any], InnerLoop]]:
        """Every setting that fits U, as (setting, the PPO inner loop)."""
        settings = itertools.product(self.gammas, self.lams, self.lrs, self.rollouts, self.passes)
        for gamma, lam, lr, m, p in settings:
            if inner.steps % m:
                continue
            sizes = {m} if self.full_batch_only else {b for b in self.minibatches if m % b == 0}
            for mb in sorted(sizes | {m}):
                loop = dataclasses.replace(
                    inner, loss=PPOLoss(gamma=gamma, lam=lam), guide=None, lr=lr,
                    update_every=m, buffer_size=max(m, 32), minibatch=mb, passes=p)  # fmt: skip
                yield {"gamma": gamma, "lam": lam, "lr": lr, "rollout": m, "minibatch": mb,
                       "passes": p}, loop  # fmt: skip


def summary(finals: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Mean and median of a setting's final returns."""
    return {f"{prefix}mean": float(finals.mean()), f"{prefix}median": float(np.median(finals))}


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Confirmed settings first, by confirmation mean; then the rest by tuning mean."""
    return sorted(rows, key=lambda r: (-r.get("confirm_mean", -np.inf), -r["mean"]))


def table(rows: list[dict[str, Any]], title: str, about: str) -> str:
    """The markdown report, best setting first; confirmation columns when there are any."""
    confirmed = any("confirm_mean" in r for r in rows)
    extra = " confirmation mean | confirmation median |" if confirmed else ""
    lines = [f"# {title}", "", about, "",
             f"| γ | λ | lr | rollout M | minibatch | passes | mean | median |{extra}",
             "|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (2 * confirmed)]  # fmt: skip
    for r in rows:
        line = (f"| {r['gamma']} | {r['lam']} | {r['lr']:g} | {r['rollout']} | {r['minibatch']} "
                f"| {r['passes']} | {r['mean']:.2f} | {r['median']:.2f} |")  # fmt: skip
        if confirmed:
            line += (f" {r['confirm_mean']:.2f} | {r['confirm_median']:.2f} |"
                     if "confirm_mean" in r else " | |")  # fmt: skip
        lines.append(line)
    return "\n".join(lines) + "\n"


def fragment(best: dict[str, Any], about: str, command: str, name: str) -> str:
    """The best setting as scoped ``ppo/`` bindings, included on top of an experiment."""
    m = best["rollout"]
    confirmed = (f"; on the confirmation tasks mean {best['confirm_mean']:.2f}, median "
                 f"{best['confirm_median']:.2f}" if "confirm_mean" in best else "")  # fmt: skip
    head = (f"{name} — the `ppo` baseline tuned by benchmarks/tune_ppo.py for {about}; best "
            f"setting: tuning-task mean {best['mean']:.2f}, median {best['median']:.2f}"
            f"{confirmed}. "
            "Include it on top of a config whose inner loop is the one tuned (its env, reward "
            "and U). It makes this `ppo` the only baseline, so that it also applies to a "
            f"recorded config without base.gin's baselines. The table and the command: "
            f"{command}")  # fmt: skip
    bindings = [
        ("Experiment.baselines = {'ppo': @ppo/InnerLoop()}", ""),
        ("ppo/InnerLoop.loss = @ppo/PPOLoss()", ""),
        ("ppo/InnerLoop.guide = None", ""),
        (f"ppo/InnerLoop.lr = {best['lr']!r}", ""),
        (f"ppo/InnerLoop.update_every = {m}", "rollout length M, env steps"),
        (f"ppo/InnerLoop.buffer_size = {max(m, 32)}", ""),
        (f"ppo/InnerLoop.minibatch = {best['minibatch']}", "env steps per Adam step"),
        (f"ppo/InnerLoop.passes = {best['passes']}", "PPO epochs over each rollout"),
        (f"ppo/PPOLoss.gamma = {best['gamma']!r}", ""),
        (f"ppo/PPOLoss.lam = {best['lam']!r}", ""),
    ]
    lines = [f"# {line}" for line in textwrap.wrap(head, 96, break_on_hyphens=False)]
    lines += ["#", f"#   epgkit train LOSS -b \"include '{name}'\" --baseline ppo", ""]
    lines += [f"{b:<37} # {c}" if c else b for b, c in bindings]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="gin experiment, env id, run dir, loss file or zoo:NAME")
    parser.add_argument("-b", "--binding", action="append", default=[], help="a gin binding")
    parser.add_argument("--steps", type=int, help="U, env steps of each run (default: target's)")
    parser.add_argument("--runs", type=int, default=20, help="tuning tasks, one run each")
    parser.add_argument("--seed", type=int, default=1, help="seed of the tuning tasks")
    parser.add_argument("--test-seed", type=int, default=0, help="the final test's --seed")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--rollouts", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--minibatches", type=int, nargs="+", default=[32],
                        help="besides the full batch of each rollout")  # fmt: skip
    parser.add_argument("--full-batch-only", action="store_true", help="minibatch = rollout")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.99])
    parser.add_argument("--lams", type=float, nargs="+", default=[0.95])
    parser.add_argument("--gamma-lambda", action="store_true",
                        help=f"γ in {GAMMA_LAMBDA[0]} × λ in {GAMMA_LAMBDA[1]}")  # fmt: skip
    parser.add_argument("--confirm", type=int, default=0, metavar="K",
                        help="re-run the K best on other tasks and pick by those")  # fmt: skip
    parser.add_argument("--confirm-seed", type=int, default=3, help="seed of those tasks")
    parser.add_argument("--confirm-runs", type=int, default=20, help="how many of them")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers; 0 in-process")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--batch-size", type=int, default=10, help="inner loops per Dask task")
    parser.add_argument("--out", required=True, help="markdown table to write")
    parser.add_argument("--gin-out", help="gin fragment to write, e.g. gin/baselines/NAME.gin")
    args = parser.parse_args(argv)
    if args.confirm < 0:
        parser.error("--confirm takes a count of settings, 0 for none")
    if args.gamma_lambda:
        args.gammas, args.lams = GAMMA_LAMBDA

    try:
        inner = setting(args.target, args.binding)
        if args.steps is not None:
            inner = dataclasses.replace(inner, steps=args.steps)
    except (config.ConfigError, ValueError) as err:
        raise SystemExit(f"tune_ppo: {err}") from None
    jobs = tuning_jobs(args.runs, args.seed, args.test_seed)
    confirm_jobs = (confirmation_jobs(args.confirm_runs, args.confirm_seed, jobs, args.test_seed)
                    if args.confirm else [])  # fmt: skip
    grid = Grid(args.lrs, args.rollouts, args.minibatches, args.passes, args.gammas, args.lams,
                args.full_batch_only)  # fmt: skip
    points = list(grid.points(inner))
    if not points:
        raise SystemExit(f"tune_ppo: no rollout in {args.rollouts} divides U = {inner.steps}")

    started = time.perf_counter()
    with connect(args.workers, args.scheduler) as executor:
        loops = {str(i): loop for i, (_, loop) in enumerate(points)}
        results = tt.run_methods(loops, jobs, args.batch_size, executor)
        rows = [{**point, **summary(np.array([r.fitness for r in results[str(i)]])), "i": i}
                for i, (point, _) in enumerate(points)]  # fmt: skip
        rows.sort(key=lambda r: -r["mean"])
        if args.confirm:
            best = {str(r["i"]): loops[str(r["i"])] for r in rows[: args.confirm]}
            confirmed = tt.run_methods(best, confirm_jobs, args.batch_size, executor)
            for r in rows[: args.confirm]:
                r.update(summary(np.array([x.fitness for x in confirmed[str(r["i"])]]), "confirm_"))
    rows = ranked(rows)

    on = inner.env_id if args.target == inner.env_id else f"`{args.target}` on {inner.env_id}"
    reward = f" with env_kwargs {dict(inner.env_kwargs)}" if inner.env_kwargs else ""
    about = (f"{on}{reward}, U = {inner.steps:,} env steps, {args.runs} tuning tasks "
             f"(`--seed {args.seed}`)")  # fmt: skip
    if args.confirm:
        about += (f", the {args.confirm} best re-run on {args.confirm_runs} confirmation tasks "
                  f"(`--confirm-seed {args.confirm_seed}`) and ranked by those")  # fmt: skip
    command = " ".join(["python benchmarks/tune_ppo.py", *(sys.argv[1:] if argv is None else argv)])
    report = table(
        rows,
        f"PPO tuning for `{args.target}` on {inner.env_id}",
        f"{about}, held out from evolution and from the final test (`--seed {args.test_seed}`); "
        f"final return = mean of {inner.eval_episodes} sampled episodes of the final policy. "
        f"{len(points)} settings in {time.perf_counter() - started:.0f} s. Command: `{command}`.",
    )
    Path(args.out).write_text(report)
    print("\n".join(report.splitlines()[:12]))
    print("best: " + " ".join(f"{k}={v}" for k, v in rows[0].items() if k != "i"))
    if args.gin_out:
        out = Path(args.gin_out).resolve()
        # Inside the gin folder, `include` finds it by its relative name (baselines/NAME.gin).
        name = out.relative_to(gin_dir) if out.is_relative_to(gin_dir := config.GIN_DIR) else out
        out.write_text(fragment(rows[0], about, f"{args.out}, `{command}`", str(name)))
        print(f"wrote {args.gin_out}")


if __name__ == "__main__":
    main()
