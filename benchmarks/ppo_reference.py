"""PPO in epgkit's inner loop against Stable-Baselines3's PPO on Hopper-v5, same step budget.

A weak baseline makes every comparison with an evolved loss worthless, so this measures the
PPO baseline that `epgkit train --baseline ppo` uses against a widely used implementation, in
one run: final return (mean of 3 sampled episodes of the final policy, as epgkit's fitness)
after the same number of env steps, over several seeds.

    pip install -e '.[bench]'
    python benchmarks/ppo_reference.py            # ≈ 5 min on one core
    python benchmarks/ppo_reference.py --quick    # seconds

Settings: "sb3-like" is epgkit's PPO with SB3's defaults (rollout 2048, minibatch 64,
10 epochs, lr 3e-4); the "M=64" rows are PPO in the small update batches of the EPG inner
loop on RandomHopper (M = 64, Table 1), moderately tuned over lr and passes as the paper did.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.method.losses import PPOLoss


def epgkit_ppo(inner: InnerLoop, seeds: list[int]) -> list[float]:
    jobs = [Job(np.zeros(0, np.float32), 0.0, 0, 10_000 + s, i) for i, s in enumerate(seeds)]
    return [r.fitness for r in inner.run(jobs)]


def sb3_ppo(steps: int, seeds: list[int]) -> list[float] | None:
    try:
        import gymnasium as gym
        from stable_baselines3 import PPO
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.monitor import Monitor
    except ImportError:
        return None
    returns = []
    for seed in seeds:
        env = Monitor(gym.make("Hopper-v5"))
        model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
        model.learn(total_timesteps=steps)
        mean, _ = evaluate_policy(model, env, n_eval_episodes=3, deterministic=False)
        returns.append(float(mean))
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = 2048 if args.quick else 20_480
    seeds = list(range(1 if args.quick else args.seeds))
    base = InnerLoop(env_id="Hopper-v5", loss=PPOLoss(), guide=None, steps=steps,
                     eval_episodes=3)  # fmt: skip
    settings = {
        "epgkit PPO, sb3-like (M=2048, mb 64, 10 passes, lr 3e-4)": dataclasses.replace(
            base, update_every=2048, buffer_size=2048, minibatch=64, passes=10, lr=3e-4),
    }  # fmt: skip
    for lr in (3e-4, 1e-3):
        for passes in (1, 4, 10):
            name = f"epgkit PPO, M=64, mb 32, {passes} passes, lr {lr:g}"
            settings[name] = dataclasses.replace(
                base, update_every=64, buffer_size=64, minibatch=32, passes=passes, lr=lr
            )
    if args.quick:
        settings = dict(list(settings.items())[:2])
    print(f"Hopper-v5, {steps:,} env steps per run, seeds {seeds}; final return = mean of 3 "
          "sampled episodes of the final policy")  # fmt: skip
    rows = {}
    for name, inner in settings.items():
        t0 = time.perf_counter()
        rows[name] = epgkit_ppo(inner, seeds)
        print(f"{name:<58} {np.mean(rows[name]):8.1f}  {np.round(rows[name], 1).tolist()}"
              f"  ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    t0 = time.perf_counter()
    sb3 = sb3_ppo(steps, seeds)
    if sb3 is None:
        print("stable-baselines3 is not installed (pip install -e '.[bench]')")
        best = max(np.mean(v) for v in rows.values())
        print(f"best_epgkit_ppo={best:.1f} sb3_ppo=nan")
        return
    print(f"{'Stable-Baselines3 PPO, defaults':<58} {np.mean(sb3):8.1f}  "
          f"{np.round(sb3, 1).tolist()}  ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    best = max(rows, key=lambda k: np.mean(rows[k]))
    print(f"best epgkit setting: {best}")
    print(f"best_epgkit_ppo={np.mean(rows[best]):.1f} sb3_ppo={np.mean(sb3):.1f}")


if __name__ == "__main__":
    main()
