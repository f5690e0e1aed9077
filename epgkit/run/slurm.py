"""Dask workers as SLURM jobs, through dask-jobqueue (``pip install 'epgkit[slurm]'``).

The driver (``epgkit evolve`` on a login node) holds the Dask scheduler; each SLURM job runs
``cores`` single-threaded Dask workers with this venv's Python, so the compute nodes must see
the same file system path of the venv (as on most university clusters). Jobs that SLURM starts
late only make the first epoch wait (up to ``worker_timeout``); a job that SLURM kills (walltime,
preemption) is replaced and the scheduler reruns its lost tasks elsewhere, which give the same
results since a task depends only on its inputs.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method.executor import Executor
from epgkit.registry import register
from epgkit.run.dask_cluster import DaskExecutor, SchedulerUnreachable, quiet_dask

#: Seconds before its walltime a worker retires on its own, so that SLURM never kills one in
#: the middle of a task; its replacement job is asked for at once.
RETIRE_BEFORE_S = 300


def seconds(walltime: str) -> int:
    """Seconds of a SLURM time limit written ``[D-]HH:MM:SS``, ``HH:MM`` is not accepted."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", walltime)
    if match is None:
        raise ValueError(f"walltime {walltime!r} is not [D-]HH:MM:SS (e.g. '04:00:00')")
    days, hours, minutes, secs = (int(x or 0) for x in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


@register("cluster")
@dataclass(frozen=True)
class SlurmCluster:
    """Dask workers in SLURM jobs (``gin/clusters/slurm.gin``).

    Attributes:
        jobs: SLURM jobs kept running; the run has ``jobs × cores`` workers.
        cores: CPUs per job, each running one single-threaded Dask worker.
        memory: Memory per job, as SLURM reads it (``'8GB'``).
        walltime: Time limit of each job, ``[D-]HH:MM:SS``. Workers retire
            ``RETIRE_BEFORE_S`` seconds before it and new jobs take their place.
        queue: The SLURM partition (``#SBATCH -p``); None: the cluster's default.
        account: The account charged (``#SBATCH -A``); None: the user's default.
        job_extra: More ``#SBATCH`` directives, e.g. ``('--qos=long', '--constraint=avx2')``.
        interface: Network interface the scheduler and workers talk on (``'ib0'``); None: the
            machine's default.
        log_directory: Folder for the jobs' output files; None: where ``epgkit`` was started.
        python: The Python a job runs; None: this one (``sys.executable``).
    """

    jobs: int = 8
    cores: int = 1
    memory: str = "4GB"
    walltime: str = "04:00:00"
    queue: str | None = None
    account: str | None = None
    job_extra: tuple[str, ...] = ()
    interface: str | None = None
    log_directory: str | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        checks.check(self)
        problems = [
            f"jobs must be ≥ 1, got {self.jobs}" if self.jobs < 1 else "",
            f"cores must be ≥ 1, got {self.cores}" if self.cores < 1 else "",
        ]
        try:
            seconds(self.walltime)
        except ValueError as err:
            problems.append(str(err))
        checks.refuse("SlurmCluster", problems)

    @property
    def workers(self) -> int:
        """Dask workers the cluster holds once every job runs."""
        return self.jobs * self.cores

    def options(self) -> dict[str, Any]:
        """dask-jobqueue's ``SLURMCluster`` arguments."""
        limit = seconds(self.walltime)
        retire = limit - RETIRE_BEFORE_S if limit > 2 * RETIRE_BEFORE_S else math.ceil(limit * 0.9)
        return {
            "cores": self.cores,
            "processes": self.cores,  # one single-threaded worker per core
            "memory": self.memory,
            "walltime": self.walltime,
            "queue": self.queue,
            "account": self.account,
            "job_extra_directives": list(self.job_extra),
            "interface": self.interface,
            "log_directory": self.log_directory,
            "python": self.python or sys.executable,
            # Each worker's torch uses one thread (FACTS.md: a second never helped).
            "job_script_prologue": ["export OMP_NUM_THREADS=1"],
            "worker_extra_args": [f"--lifetime={retire}s", "--lifetime-stagger=60s"],
            "dashboard_address": None,
        }

    def describe(self) -> str:
        return f"SLURM: {self.jobs} job(s) × {self.cores} worker(s)" + (
            f" on partition {self.queue}" if self.queue else ""
        )

    @contextmanager
    def start(self, worker_timeout: float) -> Iterator[Executor]:
        """Submits the jobs, keeps ``jobs`` of them running, cancels them on exit."""
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ConfigError(
                "SlurmCluster needs dask-jobqueue, which is not installed: "
                "pip install 'epgkit[slurm]'"
            ) from None
        # dask-jobqueue submits from a background thread: without sbatch, the run would log
        # its failures and wait worker_timeout seconds for workers that never come.
        if shutil.which("sbatch") is None:
            raise ConfigError(
                "SlurmCluster submits its workers with sbatch, which is not on this machine's "
                "PATH: run from a SLURM login node, or pick another cluster (--workers N runs "
                "here)"
            )
        from dask.distributed import Client

        quiet_dask()
        # The scheduler serves /health on 8787 and moves to a free port when a run holds it.
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = SLURMCluster(**self.options())
        try:
            _check_submission(cluster.job_script())
        except BaseException:
            _close(cluster)
            raise
        try:
            # Adaptive at a fixed size: a job that ended (walltime, preemption, a crash) is
            # replaced by a new submission instead of leaving the run short of workers.
            cluster.adapt(minimum_jobs=self.jobs, maximum_jobs=self.jobs)
            with Client(cluster) as client:
                yield DaskExecutor(client, worker_timeout=worker_timeout)
        finally:
            _close(cluster)


def _close(cluster: Any) -> None:
    """Closes the cluster; dask-jobqueue's own failure to (seen: an ``AssertionError`` on a
    cluster whose first submission failed) is a warning, not a traceback over the run's end."""
    try:
        cluster.close()
    except Exception as err:  # noqa: BLE001  (the run's outcome matters more)
        print(
            f"epgkit: warning: closing the SLURM cluster failed ({type(err).__name__}); check "
            "`squeue --me` for worker jobs left running",
            file=sys.stderr,
        )


def _check_submission(script: str) -> None:
    """Asks SLURM whether it would take a worker's job (``sbatch --test-only``, which submits
    nothing): an unreachable controller, an unknown partition or account is one line here,
    before the run directory is written, rather than a wait of ``worker_timeout`` for workers
    that dask-jobqueue's background submissions never start."""
    try:
        out = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SchedulerUnreachable(f"SlurmCluster: sbatch --test-only failed: {err}") from None
    if out.returncode != 0:
        said = [x.strip() for x in out.stderr.splitlines() if x.strip()] or [out.stdout.strip()]
        raise SchedulerUnreachable(
            f"SlurmCluster: SLURM would not take a worker's job: {said[-1]} (checked with "
            "sbatch --test-only; see the SlurmCluster bindings in gin/clusters/slurm.gin)"
        )
