"""Wall time of one ES epoch on a local Dask cluster of 1 and of 2 workers (SPEC §5).

    python benchmarks/es_scaling.py            # ≈ 1 minute on 2 cores
    python benchmarks/es_scaling.py --quick    # seconds: tiny settings, for the smoke test

The epoch is a RandomHopper experiment built from ``gin/randomhopper.gin`` with bindings that
shrink it to a benchmark (W inner loops of U steps, K per Dask task, so W/K coarse tasks), run
with ``epgkit.method.evolve.run_jobs`` on ``epgkit.run.cluster.connect(workers)`` exactly as
``epgkit evolve`` runs it. Both clusters are up at once and the timed epochs alternate between
them, round by round on the same inner loops, so a busy neighbour or a slow spell of the
machine slows both alike (run one after the other, the same 1-worker epoch varied by 7 %
between runs here). Each cluster first runs a warm-up epoch (a worker pays torch's import and
MuJoCo's model compilation on its first task); the best of ``--rounds`` epochs is kept. Peak
RSS is each worker's ``ru_maxrss``. The last line is ``speedup_2_workers=R3
worker_peak_rss_mb=X``."""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from epgkit.method.evolve import epoch_jobs, run_jobs
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import Job
from epgkit.run import config
from epgkit.run.cluster import DaskExecutor, connect


def experiment(quick: bool) -> Experiment:
    """The benchmark's experiment: RandomHopper, shrunk by bindings (gin stops here)."""
    if quick:
        files = ["randomhopper.gin", "debug.gin"]
        bindings = ["Experiment.inner_loops = 4", "Experiment.batch_size = 1"]
    else:
        files = ["randomhopper.gin"]
        bindings = [
            "Experiment.inner_loops = 48",  # W: 6 tasks of K = 8, 3 per worker with 2
            "Experiment.batch_size = 8",  # K
            "OpenES.population = 24",  # V
            "InnerLoop.steps = 1024",  # U: 16 updates of M = 64, N = 512
        ]
    config.parse(files, bindings)
    return config.with_policies(config.build(Experiment))


def jobs_of(exp: Experiment, epoch: int) -> list[Job]:
    """The inner loops of an epoch, with candidates drawn as ``evolve`` draws them."""
    rng = np.random.default_rng(np.random.SeedSequence([exp.seed, 0]))
    state = exp.strategy.init(exp.inner.init_phi(rng))
    noise = exp.strategy.ask(
        state, np.random.default_rng(np.random.SeedSequence([exp.seed, epoch, 0]))
    )
    candidates = exp.strategy.candidates(state, noise).astype(np.float32)
    return epoch_jobs(exp, candidates, epoch)


def peak_rss_mb(executor: DaskExecutor) -> list[float]:
    """Each worker's peak resident set size (Linux reports ru_maxrss in KiB)."""
    rss = executor.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return [kib / 1024 for kib in rss.values()]


def cpu_seconds(executor: DaskExecutor) -> float:
    """CPU time the workers have used so far, summed over workers."""
    usage = executor.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF))
    return sum(u.ru_utime + u.ru_stime for u in usage.values())


def timed_epoch(exp: Experiment, jobs: list[Job], executor: DaskExecutor) -> tuple[float, float]:
    """Wall time of one epoch and how busy the workers were (their CPU time over workers x
    wall time; lower means idle workers, or other processes holding the cores)."""
    workers = len(executor.client.nthreads())
    cpu, start = cpu_seconds(executor), time.perf_counter()
    results = run_jobs(exp, jobs, executor)
    wall = time.perf_counter() - start
    assert len(results) == len(jobs)
    return wall, (cpu_seconds(executor) - cpu) / (workers * wall)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per cluster")
    args = parser.parse_args(argv)
    exp = experiment(args.quick)
    rounds = 1 if args.quick else args.rounds
    inner = exp.inner
    tasks = -(-exp.inner_loops // exp.batch_size)
    print(
        f"settings: {inner.env_id} W={exp.inner_loops} K={exp.batch_size} tasks={tasks} "
        f"U={inner.steps} M={inner.update_every} N={inner.buffer_size} rounds={rounds}",
        flush=True,
    )
    times: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}
    with connect(1) as one, connect(2) as two:
        clusters = {1: one, 2: two}
        for executor in clusters.values():
            run_jobs(exp, jobs_of(exp, 0), executor)  # warm-up: imports, model compilation
        for r in range(rounds):
            jobs = jobs_of(exp, 1 + r)
            for workers, executor in clusters.items():
                wall, b = timed_epoch(exp, jobs, executor)
                times[workers].append(wall)
                busy[workers].append(b)
        rss = {workers: peak_rss_mb(executor) for workers, executor in clusters.items()}
    for workers in (1, 2):
        print(
            f"{workers} worker{'s' if workers > 1 else ''}: epoch {min(times[workers]):.2f} s "
            f"(median {statistics.median(times[workers]):.2f} s); workers busy "
            + ", ".join(f"{b:.0%}" for b in busy[workers])
            + " of the epochs (CPU time / workers x wall: lower means idle or other processes"
            " held the cores); worker peak RSS "
            + ", ".join(f"{mb:.0f}" for mb in rss[workers])
            + " MB",
            flush=True,
        )
    speedup = min(times[1]) / min(times[2])
    peak = max(mb for mbs in rss.values() for mb in mbs)
    print(f"speedup_2_workers={speedup:.2f} worker_peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
