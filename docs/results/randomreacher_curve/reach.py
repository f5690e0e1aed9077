"""Do the trained Reacher policies reach? An episode of each trained policy's mean action.

Trains the loss and its tuned PPO on the held-out tasks of ``--seed`` exactly as ``epgkit
train`` does (same jobs, same batches of ``Experiment.batch_size``, so the same final returns),
keeps each final policy, and runs one episode of its mean action (as ``epgkit render`` does)
on its task; an arm that does not move (zero action) runs the same episodes. Prints, per
method, the mean return of those episodes and the fingertip's distance to the target at the
start and the end of the episode, and how many of the 20 end within 5 cm of it.

    python docs/results/randomreacher_curve/reach.py SOURCE SEED [--runs N] [--steps U]
        [--only METHOD] [BINDING ...]
"""

from __future__ import annotations

import argparse

import numpy as np

import epgkit.run.train as tt
from epgkit.run.sources import load_source
from epgkit.tools.render import mean_action


def distance(env) -> float:
    body = env.unwrapped.get_body_com
    return float(np.linalg.norm((body("fingertip") - body("target"))[:2]))


def episode(loop, policy, task_seed: int) -> tuple[float, float, float]:
    """Return, start and end distance of one episode of ``policy``'s mean action (None: zero
    action)."""
    env = loop.make_env(task_seed)
    act = mean_action(loop, policy) if policy is not None else lambda obs: np.zeros(2)
    obs, _ = env.reset(seed=task_seed % 2**31)
    start, total, done = distance(env), 0.0, False
    while not done:
        obs, reward, term, trunc, _ = env.step(act(obs))
        total, done = total + float(reward), term or trunc
    end = distance(env)
    env.close()
    return total, start, end


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("seed", type=int)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="U (default: the loss's)")
    parser.add_argument("--only", default=None, help="train only this method (epg or ppo)")
    args, bindings = parser.parse_known_args()
    source = load_source(args.source)
    exp = tt.build(source, ["include 'baselines/randomreacher.gin'", *bindings])
    loops = tt.methods(exp, ["ppo"], None, args.steps)
    jobs = tt.test_jobs(source.phi, args.runs, args.seed)
    chosen = {name: loop for name, loop in loops.items() if args.only in (None, name)}
    rows = {}
    for name, results in tt.trained_policies(chosen, jobs, exp.batch_size).items():
        rows[name] = [(r.fitness, *episode(chosen[name], r.policy, r.task_seed)) for r in results]
    rows["still arm"] = [(np.nan, *episode(loops[tt.LEARNED], None, j.task_seed)) for j in jobs]
    print(
        "method       final return  mean-action return  start dist  end dist (median)  within 5 cm"
    )
    for name, r in rows.items():
        a = np.array(r)
        print(f"{name:10} {np.mean(a[:, 0]):14.2f} {np.mean(a[:, 1]):19.2f} "
              f"{np.mean(a[:, 2]):11.3f} {np.mean(a[:, 3]):9.3f} ({np.median(a[:, 3]):.3f}) "
              f"{int(np.sum(a[:, 3] < 0.05)):8d} of {len(a)}")  # fmt: skip


if __name__ == "__main__":
    main()
