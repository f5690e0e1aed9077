"""Inner-loop throughput against the physics it drives (SPEC §5), on one core.

    python benchmarks/inner_loop.py            # ≈ 2–3 minutes on 2 cores
    python benchmarks/inner_loop.py --quick    # seconds: tiny settings, for the smoke test

Measures, in one process and interleaved round by round (so a busy neighbour slows every
measurement alike), the env steps per second of:

* gymnasium: ``Hopper-v5`` with random actions (``action_space.sample()``), the reference,
  and the same on ``epgkit/RandomHopper-v0`` over the inner loops' tasks;
* epgkit: K inner loops in lockstep on RandomHopper with the paper's loss (EPGLoss
  defaults, M = 64, N = 512, updates included), with α = 0, and with α = 0.5 (PPO guidance);
* Stable-Baselines3 PPO on ``Hopper-v5`` (CPU, default hyperparameters), if installed.

An inner loop's rate is its U training steps over the wall time of ``InnerLoop.run``, which
also builds the envs and runs the final evaluation episodes (so the rate is conservative).
Each figure is the best of the rounds; the median follows in brackets. The last line is
``inner_loop_vs_gymnasium_random=R1 inner_loop_vs_sb3_ppo=R2`` (R2 = nan without SB3).
"""

from __future__ import annotations

import os

# One core: BLAS pools must not start threads (torch is limited below, before any work).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from epgkit.method.inner_loop import InnerLoop, Job  # noqa: E402
from epgkit.method.losses import EPGLoss, PPOLoss  # noqa: E402

ENV = "epgkit/RandomHopper-v0"


def random_actions(env_id: str, steps: int, task_seeds: list[int]) -> float:
    """Steps/s of ``env_id`` with random actions through ``gym.make`` (resets included)."""
    per_env = steps // len(task_seeds)
    envs = []
    for task_seed in task_seeds:
        kwargs = {"task_seed": task_seed} if env_id.startswith("epgkit/") else {}
        env = gym.make(env_id, **kwargs)
        env.reset(seed=task_seed)
        env.action_space.seed(task_seed)
        envs.append(env)
    start = time.perf_counter()
    for env in envs:
        for _ in range(per_env):
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return per_env * len(envs) / elapsed


def inner_loop(inner: InnerLoop, k: int, alpha: float) -> float:
    """Training steps/s of k inner loops in lockstep (env construction and evaluation in)."""
    phi = inner.init_phi(np.random.default_rng(0))
    jobs = [Job(phi, alpha, task_seed=100 + i, seed=1000 + i, index=i) for i in range(k)]
    start = time.perf_counter()
    results = inner.run(jobs)
    elapsed = time.perf_counter() - start
    failed = [r.failed for r in results if r.failed]
    if failed:
        raise RuntimeError(f"inner loops failed during the benchmark: {failed}")
    return k * inner.steps / elapsed


def sb3_ppo(steps: int, n_steps: int) -> float:
    """Steps/s of Stable-Baselines3 PPO learning on Hopper-v5 (CPU, default settings)."""
    from stable_baselines3 import PPO

    env = gym.make("Hopper-v5")
    model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=64, device="cpu", seed=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def have_sb3() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--k", type=int, default=8, help="inner loops in lockstep (K)")
    parser.add_argument("--steps", type=int, default=4096, help="U, steps per inner loop")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    k, rounds = args.k, args.rounds
    inner = InnerLoop(env_id=ENV, loss=EPGLoss(), guide=PPOLoss(), steps=args.steps)
    random_steps, sb3_steps, sb3_rollout = 20_000, 8192, 2048
    if args.quick:
        k, rounds, random_steps, sb3_steps, sb3_rollout = 2, 1, 400, 128, 64
        inner = InnerLoop(
            env_id=ENV, steps=64, update_every=32, buffer_size=64, eval_episodes=1,
            loss=EPGLoss(strides=(4, 2)),
        )  # fmt: skip
    task_seeds = [100 + i for i in range(k)]

    measures: dict[str, Callable[[], float]] = {
        "gymnasium Hopper-v5, random actions": lambda: random_actions(
            "Hopper-v5", random_steps, task_seeds
        ),
        "gymnasium RandomHopper-v0 (the same tasks), random actions": lambda: random_actions(
            ENV, random_steps, task_seeds
        ),
        f"epgkit inner loop, K={k} lockstep, alpha=0": lambda: inner_loop(inner, k, 0.0),
        f"epgkit inner loop, K={k} lockstep, alpha=0.5 (PPO guidance)": lambda: inner_loop(
            inner, k, 0.5
        ),
    }
    if have_sb3():
        measures["Stable-Baselines3 PPO, Hopper-v5"] = lambda: sb3_ppo(sb3_steps, sb3_rollout)
    loss = inner.loss
    print(
        f"settings: K={k} U={inner.steps} M={inner.update_every} N={inner.buffer_size} "
        f"EPGLoss(channels={loss.channels}, kernels={loss.kernels}, strides={loss.strides}) "
        f"rounds={rounds} torch_threads={torch.get_num_threads()}",
        flush=True,
    )
    rates: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            rates[name].append(measure())
    best = {name: max(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"{name}: {best[name]:,.0f} steps/s (median {statistics.median(r):,.0f})")
    inner_rate = best[f"epgkit inner loop, K={k} lockstep, alpha=0"]
    r1 = inner_rate / best["gymnasium Hopper-v5, random actions"]
    sb3 = best.get("Stable-Baselines3 PPO, Hopper-v5")
    r2 = inner_rate / sb3 if sb3 else float("nan")
    print(f"inner_loop_vs_gymnasium_random={r1:.2f} inner_loop_vs_sb3_ppo={r2:.2f}")


if __name__ == "__main__":
    main()
