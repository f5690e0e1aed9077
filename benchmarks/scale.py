"""A paper-scale epoch (W = 256 inner loops) on 64, 128 and 256 Dask workers, simulated.

Each inner loop is replaced by a sleep as long as a real RandomHopper inner loop (batch) takes:
``--measure`` runs real batches of K = 1, 2, 4, 8 inner loops of ``gin/randomhopper_small.gin``
(U = 4,096, their evaluation episodes ending early when the hopper falls, as in a run) and
writes their durations to ``benchmarks/data/randomhopper_durations.json``; the default reads
that file. A duration is the CPU time of the batch's (single) thread, the least of two rounds
(every batch once per round; its work is the same each time): what it takes on a core of its
own, as a cluster's worker has, whatever else this machine runs. Batches differ by their tasks and
seeds, e.g. by how early their evaluation episodes end. Failures are added at
``--failure-rate`` per inner loop: a failed inner loop stops at a uniform random point of its
run (the committed RandomHopper runs had none in 1,504, so the default 2 % is pessimistic); in
a batch of K > 1 the others go on, so the batch lasts as long.

The epoch's inner loops are grouped as ``run_jobs`` groups them, K = Experiment.batch_size per
Dask task, with the rule of gin/clusters/slurm.gin: K = W / workers (tasks = workers), so no
worker idles. Workers are threads that sleep, so 256 of them fit 2 cores, and take the next
task when they are free, as Dask's scheduler hands out queued tasks; each task first waits
``--overhead-s`` (a Dask round trip, FACTS.md), not counted as work. (In-process Dask workers
were tried first: 256 of them on one event loop of a busy 2-core machine did not start in
minutes.) Durations are scaled so that one inner loop (K = 1) sleeps ``--mean-s`` on average,
which makes the overhead weigh more than at real durations (seconds to minutes): the figures
are conservative. The parallel efficiency is the fraction of worker time spent in inner loops: the
time tasks slept over workers × epoch wall time. The default K = 8 on 256 workers is printed for
contrast. The last line is ``parallel_efficiency_64=E parallel_efficiency_128=E
parallel_efficiency_256=E``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "randomhopper_durations.json"
W = 256  # the paper's inner loops per epoch
GROUPS = (1, 2, 4, 8)  # batch sizes K measured


def measure(out: Path, counts: dict[int, int], repeats: int) -> None:
    """Times real RandomHopper batches of each K in this process and writes them to ``out``."""
    import torch

    from epgkit.method.experiment import Experiment
    from epgkit.method.inner_loop import Job, run_batch
    from epgkit.run import config

    torch.set_num_threads(1)
    config.parse(["randomhopper_small.gin"])
    exp = config.with_policies(config.build(Experiment))
    rng = np.random.default_rng(0)
    phi0 = exp.inner.init_phi(rng)
    batches = [(k, [Job((phi0 + 0.02 * rng.standard_normal(phi0.shape)).astype(np.float32), 0.0,
                        int(rng.integers(2**31)), int(rng.integers(2**63)), i) for i in range(k)])
               for k, count in counts.items() for _ in range(count)]  # fmt: skip
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
    parser.add_argument("--epochs", type=int, default=4, help="simulated epochs per size")
    parser.add_argument("--mean-s", type=float, default=1.0,
                        help="mean sleep of one inner loop (K = 1), seconds")  # fmt: skip
    parser.add_argument("--failure-rate", type=float, default=0.02)
    parser.add_argument("--overhead-s", type=float, default=0.013,
                        help="a Dask task's round trip, not busy (FACTS.md)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.measure:
        measure(DATA, {1: 12, 2: 4, 4: 3, 8: 2}, repeats=2)
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
        print(f"{workers} workers, K={k} ({W // k} tasks): parallel efficiency {efficiency:.3f}, "
              f"epoch {epoch_s / scale:.1f} s at measured durations", flush=True)  # fmt: skip
        figures[(workers, k)] = efficiency
    print(f"default K=8 on 256 workers: parallel_efficiency={figures[(256, 8)]:.3f}")
    print(" ".join(f"parallel_efficiency_{w}={figures[(w, k)]:.3f}"
                   for w, k in ((64, 4), (128, 2), (256, 1))))  # fmt: skip


if __name__ == "__main__":
    main()
