"""Do trained Hopper (or Walker) policies locomote? An episode of each one's mean action.

Trains the loss and its ``ppo`` baseline on the held-out tasks of SEED exactly as ``epgkit
train`` does (same jobs, same batches of ``Experiment.batch_size``, so the same final returns),
keeps each final policy, and runs one episode of its mean action (as ``epgkit render`` does) on
its task; a body given zero action runs the same episodes. Prints, per method, the mean final
return, the mean-action episode's return, length (steps until the fall or the time limit of
1,000) and distance along x (metres), its mean speed, how many episodes lasted 1,000 steps,
and the mean number of hops: flight phases (at least 2 env steps, 16 ms in Hopper-v5, in which
no part of the body touches the floor) that end in a landing, not in the fall that ends the
episode. A forward dive is ≈ 100 steps and ≈ 1 m, a leap or two; a gait hops every stride.

    python docs/results/locomotion/gait.py SOURCE SEED BASELINE_GIN [--runs N] [--steps U]
        [--only METHOD] [--per-task] [-b BINDING ...]
"""

from __future__ import annotations

import argparse

import numpy as np

import epgkit.run.train as tt
from epgkit.run.sources import load_source
from epgkit.tools.render import mean_action


def airborne(data) -> bool:
    """Whether no part of the body touches the floor (geom 0) in this step."""
    pairs = zip(data.contact.geom1[: data.ncon], data.contact.geom2[: data.ncon], strict=True)
    return not any(0 in pair for pair in pairs)


def flights(flying: list[bool]) -> list[int]:
    """Lengths (steps) of the hops: flight phases of at least 2 steps that end on the floor; not
    the drop from the starting pose (the body starts a little above the floor), nor a phase
    still in the air when the episode ends (the fall, or the time limit)."""
    hops, run, start = [], 0, 0
    for t, up in enumerate(flying):
        if up:
            start, run = (t if run == 0 else start), run + 1
            continue
        if run >= 2 and start > 0:
            hops.append(run)
        run = 0
    return hops


def episode(loop, policy, task_seed: int) -> tuple[float, int, float, float, list[int]]:
    """Return, length, x distance, mean x speed and hops (``flights``) of one episode of
    ``policy``'s mean action (None: zero action)."""
    env = loop.make_env(task_seed)
    dims = loop.dims()
    act = mean_action(loop, policy) if policy is not None else lambda obs: np.zeros(dims.act_dim)
    obs, info = env.reset(seed=task_seed % 2**31)
    x0, total, steps, done, flying = info["x_position"], 0.0, 0, False, []
    while not done:
        obs, reward, term, trunc, info = env.step(act(obs))
        total, steps, done = total + float(reward), steps + 1, term or trunc
        flying.append(airborne(env.unwrapped.data))
    moved = float(info["x_position"] - x0)
    speed = moved / (steps * env.unwrapped.dt)
    env.close()
    return total, steps, moved, speed, flights(flying)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("seed", type=int)
    parser.add_argument("baseline_gin", help="e.g. baselines/randomhopper_velocity.gin")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--only", default=None, help="train only this method (epg or ppo)")
    parser.add_argument("--per-task", action="store_true", help="also each episode's hops")
    parser.add_argument("-b", "--binding", action="append", default=[], help="a gin binding")
    args = parser.parse_args()
    source = load_source(args.source)
    exp = tt.build(source, [f"include '{args.baseline_gin}'", *args.binding])
    loops = tt.methods(exp, ["ppo"], None, args.steps)
    jobs = tt.test_jobs(source.phi, args.runs, args.seed)
    any_loop = loops[tt.LEARNED]
    chosen = {name: loop for name, loop in loops.items() if args.only in (None, name)}
    rows = {}
    for name, results in tt.trained_policies(chosen, jobs, exp.batch_size).items():
        rows[name] = [(r.fitness, *episode(chosen[name], r.policy, r.task_seed)) for r in results]
    rows["zero action"] = [(np.nan, *episode(any_loop, None, j.task_seed)) for j in jobs]
    if args.per_task:
        for name, r in rows.items():
            for job, (_, _, length, moved, _, hops) in zip(jobs, r, strict=True):
                print(f"{name:12} task {job.task_seed:10d}: {length:4d} steps, {moved:+.2f} m, "
                      f"hops of {hops} steps")  # fmt: skip
    rows = {name: [(*x[:5], len(x[5])) for x in r] for name, r in rows.items()}
    print(f"U = {any_loop.steps:,} steps, {len(jobs)} tasks of seed {args.seed}")
    print("method        final return  mean-action return  length (median)  x metres (median)"
          "  speed m/s  1,000 steps  hops")  # fmt: skip
    for name, r in rows.items():
        a = np.array(r)
        print(f"{name:12} {np.mean(a[:, 0]):13.2f} {np.mean(a[:, 1]):19.2f} "
              f"{np.mean(a[:, 2]):7.0f} ({np.median(a[:, 2]):4.0f}) "
              f"{np.mean(a[:, 3]):10.2f} ({np.median(a[:, 3]):5.2f}) {np.mean(a[:, 4]):10.2f} "
              f"{int(np.sum(a[:, 2] >= 1000)):7d} of {len(a)} {np.mean(a[:, 5]):5.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
