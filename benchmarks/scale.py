"""A paper-scale epoch (W = 256 inner loops) on 64, 128 and 256 Dask workers, simulated.

Each inner loop is replaced by a sleep as long as a real RandomHopper inner loop (batch) takes:
``--measure`` runs real batches of K = 1, 2, 4, 8 inner loops of ``gin/randomhopper_small.gin``
(U = 4,096, their evaluation episodes ending early when the hopper falls, as in a run) and
writes their durations to ``benchmarks/data/randomhopper_durations.json``; the default reads
that file. A duration is the CPU time of the batch's (single) thread, the least of
``--repeats`` rounds (every batch once per round; its work is the same each time): what it
takes on a core of its own, as a cluster's worker has, whatever else this machine runs (only in
part: see below).
Batches differ by their tasks and seeds, and by the noise of the machine they ran on. Failures
are added at ``--failure-rate`` per inner loop: a failed inner loop stops at a uniform random
point of its run (the committed RandomHopper runs had none in 1,504, so the default 2 % is
pessimistic); in a batch of K > 1 the others go on, so the batch lasts as long.

The epoch's inner loops are grouped as ``run_jobs`` groups them, K = Experiment.batch_size per
Dask task, with the rule of gin/clusters/slurm.gin: K = W / workers (tasks = workers), so no
worker idles. Workers are threads that sleep, so 256 of them fit 2 cores, and take the next
task when they are free, as Dask's scheduler hands out queued tasks; each task first waits
``--overhead-s`` (a Dask round trip, FACTS.md), not counted as work. (In-process Dask workers
were tried first: 256 of them on one event loop of a busy 2-core machine did not start in
minutes.) Durations are scaled so that one inner loop (K = 1) sleeps ``--mean-s`` on average,
which makes the overhead weigh more than at real durations (seconds to minutes): the figures
are conservative. The parallel efficiency is the fraction of worker time spent in inner loops: the
time tasks slept over workers × epoch wall time. Beside it each line prints the bound of a
synchronous epoch, computed without sleeping: the same sleeps handed to the first free worker,
the busy time over workers × the last finish (with one task per worker it is mean/max of the
sleeps). The gap between the two is the simulation's own cost (threads on a busy machine, the
round trip); the gap between the bound and 1 is what any scheduler of a synchronous ES loses.
The default K = 8 on 256 workers is printed for contrast. ``--noise`` times the same K = 1
inner loops several times over, to tell how much of the measured spread is the inner loops'
work and how much the machine. The last line is ``parallel_efficiency_64=E
parallel_efficiency_128=E parallel_efficiency_256=E``.

Why 256 workers do not reach 0.9 (2026-12-01, durations re-measured with ``--measure`` while
the machine was otherwise nearly idle): an epoch of a synchronous ES ends with its slowest
task, and with K = W / workers every worker runs exactly one task, so the efficiency is at
most mean/max of W / K task durations; no order or placement of tasks changes it. Drawn with
replacement from n measured durations, the max of 256 draws is the largest measurement, so the
bound is the pool's mean/max: 0.899 for the 16 K = 1 inner loops (1.41–1.71 s; 0.888 with 2 %
failures), against 0.96 for K = 2 and K = 4, whose lockstep batches average two or four inner
loops each. The simulation costs a further 0.01–0.03 (its threads and round trips weigh more
at 1 s sleeps than at real durations). The K = 1 spread is the inner loops' own: they take the
same env steps (4,096 and about 20 evaluation steps), resets cost 0.16 ms, and the physics of
each task (contacts, masses, gravity) costs what it costs. Smaller tasks cannot help either: an
inner loop is sequential, its evaluation episodes take under 1 % of it, and K = 1 on 128
workers (two tasks each) loses lockstep's throughput (1.54 s per inner loop alone, 1.10 in pairs).
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "randomhopper_durations.json"
W = 256  # the paper's inner loops per epoch
GROUPS = (1, 2, 4, 8)  # batch sizes K measured


def hopper() -> tuple[Any, Callable[[int], list[Any]]]:
    """The inner loop of ``gin/randomhopper_small.gin`` in this process (one torch thread, as a
    worker runs it) and a draw of k jobs: σ = 0.02 perturbations of φ₀, fresh tasks and seeds."""
    import torch

    from epgkit.method.experiment import Experiment
    from epgkit.method.inner_loop import Job
    from epgkit.run import config

    torch.set_num_threads(1)
    config.parse(["randomhopper_small.gin"])
    exp = config.with_policies(config.build(Experiment))
    rng = np.random.default_rng(0)
    phi0 = exp.inner.init_phi(rng)

    def job(i: int) -> Job:
        phi = (phi0 + 0.02 * rng.standard_normal(phi0.shape)).astype(np.float32)
        return Job(phi, 0.0, int(rng.integers(2**31)), int(rng.integers(2**63)), i)

    def draw(k: int) -> list[Job]:
        return [job(i) for i in range(k)]

    return exp, draw


def measure(out: Path, counts: dict[int, int], repeats: int) -> None:
    """Times real RandomHopper batches of each K in this process and writes them to ``out``."""
    from epgkit.method.inner_loop import run_batch

    exp, draw = hopper()
    batches = [(k, draw(k)) for k, count in counts.items() for _ in range(count)]
    cpu: list[list[float]] = [[] for _ in batches]
    for r in range(repeats):  # round by round, so that a busier moment slows every batch alike
        for (k, jobs), times in zip(batches, cpu, strict=True):
            start = time.thread_time()
            results = run_batch(exp.inner, jobs)
            times.append(time.thread_time() - start)
            assert isinstance(results, list), results
            print(f"round {r + 1}, K={k}: {times[-1]:.2f} s CPU", flush=True)
    durations: dict[str, list[float]] = {str(k): [] for k in counts}
    for (k, _), times in zip(batches, cpu, strict=True):
        durations[str(k)].append(min(times))  # the same work each time: the least disturbed
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "setting": f"gin/randomhopper_small.gin: {exp.inner.env_id}, U={exp.inner.steps}, "
                   f"M={exp.inner.update_every}, alpha=0, sigma=0.02 around phi0",
        "measured": time.strftime("%Y-%m-%d"),
        "durations_s": durations,
    }, indent=1) + "\n")  # fmt: skip


def noise(jobs: int, rounds: int) -> None:
    """Times the same ``jobs`` K = 1 inner loops ``rounds`` times over and prints how much one
    inner loop varies between rounds (the machine) against how much they differ (their work)."""
    from epgkit.method.inner_loop import run_batch

    exp, draw = hopper()
    batch = draw(jobs)
    cpu = np.zeros((jobs, rounds))
    for r in range(rounds):  # round by round, as --measure does
        for i, job in enumerate(batch):
            start = time.thread_time()
            run_batch(exp.inner, [job])
            cpu[i, r] = time.thread_time() - start
    for i, times in enumerate(cpu):
        print(f"inner loop {i}: " + " ".join(f"{t:.2f}" for t in times) + " s CPU")
    least = cpu.min(axis=1)
    print(f"same inner loop, max/min over rounds: up to {(cpu.max(axis=1) / least).max():.2f}; "
          f"least times of the {jobs}: {least.min():.2f}–{least.max():.2f} s, "
          f"mean/max {least.mean() / least.max():.3f}")  # fmt: skip


def bound(workers: int, sleeps: list[float]) -> float:
    """The efficiency of a synchronous epoch without any overhead: each task to the first
    free worker, busy time over workers × the last finish (mean/max for one task each)."""
    free = [0.0] * workers
    for d in sleeps:
        heapq.heappush(free, heapq.heappop(free) + d)
    return sum(sleeps) / (workers * max(free))


def task_durations(
    pool: dict[int, list[float]], k: int, failure_rate: float, rng: np.random.Generator
) -> list[float]:
    """Sleeps of one epoch's W // k tasks: measured K = k batches, drawn with replacement; a
    K = 1 task whose inner loop fails stops at a uniform random point of it."""
    tasks = [float(rng.choice(pool[k])) for _ in range(W // k)]
    if k == 1:
        tasks = [d * rng.uniform() if rng.uniform() < failure_rate else d for d in tasks]
    return tasks


def sleep_for(seconds: float, overhead: float) -> float:
    """A simulated inner loop (batch) after its task's round trip; returns the time it slept."""
    time.sleep(overhead)
    start = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - start


def simulate(workers: int, epochs: list[list[float]], overhead: float) -> tuple[float, float]:
    """Parallel efficiency and mean epoch wall time of ``epochs`` (each a list of sleeps)."""
    busy = wall = 0.0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(sleep_for, [0.0] * workers, [0.0] * workers))  # every thread started
        for sleeps in epochs:
            start = time.perf_counter()
            busy += sum(pool.map(sleep_for, sleeps, [overhead] * len(sleeps)))
            wall += time.perf_counter() - start
    return busy / (workers * wall), wall / len(epochs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short sleeps, 1 epoch each")
    parser.add_argument("--measure", action="store_true", help=f"re-measure into {DATA.name}")
    parser.add_argument(
        "--noise",
        action="store_true",
        help="time 6 inner loops 4 times: the machine's noise vs their work",
    )
    parser.add_argument("--repeats", type=int, default=4,
                        help="--measure: rounds per batch, the least kept")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=4, help="simulated epochs per size")
    parser.add_argument("--mean-s", type=float, default=1.0,
                        help="mean sleep of one inner loop (K = 1), seconds")  # fmt: skip
    parser.add_argument("--failure-rate", type=float, default=0.02)
    parser.add_argument("--overhead-s", type=float, default=0.013,
                        help="a Dask task's round trip, not busy (FACTS.md)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.noise:
        noise(6, 4)
        return
    if args.measure:
        measure(DATA, {1: 16, 2: 6, 4: 4, 8: 2}, repeats=args.repeats)
    data = json.loads(DATA.read_text())
    measured = {int(k): v for k, v in data["durations_s"].items()}
    scale = (0.1 if args.quick else args.mean_s) / statistics.mean(measured[1])
    pool = {k: [d * scale for d in v] for k, v in measured.items()}
    epochs = 1 if args.quick else args.epochs
    print(f"settings: W={W}, durations of {data['setting']} (measured {data['measured']}; "
          f"K=1 mean {statistics.mean(measured[1]):.2f} s, sleeping {scale:.3g}× that), "
          f"failure rate {args.failure_rate:g}, {epochs} epoch(s) per size",
          flush=True)  # fmt: skip
    rng = np.random.default_rng(args.seed)
    figures = {}
    for workers, k in ((64, 4), (128, 2), (256, 1), (256, 8)):
        sleeps = [task_durations(pool, k, args.failure_rate, rng) for _ in range(epochs)]
        efficiency, epoch_s = simulate(workers, sleeps, args.overhead_s)
        best = statistics.mean(bound(workers, s) for s in sleeps)
        print(f"{workers} workers, K={k} ({W // k} tasks): parallel efficiency {efficiency:.3f} "
              f"(bound {best:.3f}), epoch {epoch_s / scale:.1f} s at measured durations",
              flush=True)  # fmt: skip
        figures[(workers, k)] = efficiency
    print(f"default K=8 on 256 workers: parallel_efficiency={figures[(256, 8)]:.3f}")
    print(" ".join(f"parallel_efficiency_{w}={figures[(w, k)]:.3f}"
                   for w, k in ((64, 4), (128, 2), (256, 1))))  # fmt: skip


if __name__ == "__main__":
    main()
