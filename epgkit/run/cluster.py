"""Where a run's inner loops run: the ``Cluster`` protocol, the built-in clusters, ``Launch``.

Where to run is configured apart from what runs: ``Experiment`` says what is computed (and its
results never depend on where), ``Launch`` says where it runs and where it is written. A
cluster is a component registered with ``epgkit.register("cluster")`` and chosen in gin
(``Launch.cluster = @Scheduler()``, ``gin/clusters/*.gin``); its ``start`` gives an executor
(``epgkit.method.executor.Executor``) for the duration of a run:

- ``LocalCluster``: an embedded Dask cluster of single-threaded worker processes (default);
- ``Scheduler``: a running Dask scheduler and its workers, anywhere;
- ``InProcess``: no Dask at all, every inner loop in this process (debugging, tiny runs).

No wait is unbounded: reaching a scheduler takes at most ``connect_timeout`` seconds, and a run
whose cluster shows no worker for ``Launch.worker_timeout`` seconds stops (``NoWorkers``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import gin

from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method import executor as _executor
from epgkit.method.executor import Executor
from epgkit.registry import register
from epgkit.run.dask_cluster import (
    DaskExecutor,
    NoWorkers,
    SchedulerLost,
    SchedulerUnreachable,
    local,
    remote,
)

__all__ = [
    "Cluster", "DaskExecutor", "Executor", "InProcess", "Launch", "LocalCluster", "NoWorkers",
    "Scheduler", "SchedulerLost", "SchedulerUnreachable", "connect", "local_processes",
]  # fmt: skip


@runtime_checkable
class Cluster(Protocol):
    """Where inner loops run. ``start`` is entered once per run (or sweep)."""

    def start(self, worker_timeout: float) -> contextlib.AbstractContextManager[Executor]:
        """An executor for the run, and whatever it needs stopped on exit.

        Args:
            worker_timeout: Seconds a run may wait while the cluster shows no worker at all.
        """
        ...

    def describe(self) -> str:
        """Where it runs, for the run's first line: ``2 workers``, ``tcp://h:8786``, ..."""
        ...


@register("cluster")
@dataclass(frozen=True)
class LocalCluster:
    """An embedded Dask cluster on this machine, stopped when the run ends.

    Attributes:
        workers: Single-threaded worker processes; None starts one per core.
        dashboard: Serve Dask's dashboard (its URL is printed when the run starts); needs the
            ``bokeh`` package (``pip install 'epgkit[dashboard]'``).
    """

    workers: int | None = None
    dashboard: bool = False

    def __post_init__(self) -> None:
        checks.check(self)
        if self.workers is not None and self.workers < 1:
            raise ValueError(
                f"LocalCluster: workers must be ≥ 1 (None: one per core), got {self.workers}; "
                "to run in this process, use Launch.cluster = @InProcess() (--workers 0)"
            )

    @property
    def n_workers(self) -> int:
        """The worker processes it starts."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    def start(self, worker_timeout: float) -> contextlib.AbstractContextManager[Executor]:
        if self.dashboard and importlib.util.find_spec("bokeh") is None:
            raise ConfigError(
                "--dashboard (LocalCluster.dashboard) needs the bokeh package: "
                "pip install 'epgkit[dashboard]'"
            )
        return local(self.n_workers, worker_timeout, self.dashboard)

    def describe(self) -> str:
        return f"{self.n_workers} worker{'s' if self.n_workers != 1 else ''}"


@register("cluster")
@dataclass(frozen=True)
class Scheduler:
    """A running Dask scheduler (``dask scheduler``) and the workers connected to it.

    Attributes:
        address: ``tcp://HOST:PORT`` of the scheduler.
        connect_timeout: Seconds to wait for the scheduler and its first worker (and for each
            answer of the scheduler during the run).
    """

    address: str
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        checks.check(self)
        if not self.connect_timeout > 0:
            raise ValueError(
                f"Scheduler: connect_timeout must be > 0 seconds, got {self.connect_timeout}"
            )
        from distributed.comm.addressing import parse_address, parse_host_port

        try:  # now, rather than after connect_timeout seconds of trying to reach it
            scheme, location = parse_address(self.address)
            if scheme in ("tcp", "tls", "ws", "wss"):
                parse_host_port(location)
        except ValueError as err:
            raise ValueError(
                f"Scheduler: address {self.address!r} is not a scheduler's address, "
                f"tcp://HOST:PORT ({err})"
            ) from None

    def start(self, worker_timeout: float) -> contextlib.AbstractContextManager[Executor]:
        return remote(self.address, self.connect_timeout, worker_timeout)

    def describe(self) -> str:
        return self.address


@register("cluster")
@dataclass(frozen=True)
class InProcess:
    """No cluster: every inner loop runs in this process, one batch after another."""

    def start(self, worker_timeout: float) -> contextlib.AbstractContextManager[Executor]:
        return contextlib.nullcontext(_executor.Serial())

    def describe(self) -> str:
        return "in-process"


@gin.configurable
@dataclass(frozen=True)
class Launch:
    """Where a run happens: its cluster and its directory. Nothing here changes its results.

    Attributes:
        cluster: Where inner loops run; None is ``LocalCluster()`` with its gin bindings.
        run_dir: Where to write the run; None makes ``runs/<config>/<timestamp>``.
        worker_timeout: Seconds the run waits while its cluster shows no worker at all, or its
            scheduler no answer (e.g. every worker of an external cluster died); it then stops,
            resumable.
        wandb: Also log to this Weights & Biases project (``--wandb``; offline unless
            ``WANDB_MODE`` says otherwise); None logs to the run directory only. Recorded with
            the run, so that ``--resume`` goes on logging where it logged.
    """

    cluster: Cluster | None = None
    run_dir: str | None = None
    worker_timeout: float = 300.0
    wandb: str | None = None

    def __post_init__(self) -> None:
        checks.check(self)
        if self.run_dir is not None and not str(self.run_dir).strip():
            raise ValueError(
                "Launch: run_dir is empty; name a directory (--run-dir, --out) or leave it "
                "unset for the default"
            )
        if self.wandb is not None and not str(self.wandb).strip():
            raise ValueError("Launch: wandb is an empty project name; name one or leave it None")
        if not self.worker_timeout > 0:
            raise ValueError(
                f"Launch: worker_timeout must be > 0 seconds, got {self.worker_timeout}"
            )
        if self.cluster is not None and not isinstance(self.cluster, Cluster):
            raise ValueError(
                f"Launch: cluster must be a cluster (start, describe), got {self.cluster!r}"
            )

    def where(self) -> Cluster:
        """The cluster; when the config names none, ``LocalCluster`` built through gin, so that
        its bindings (``LocalCluster.workers``) apply and the operative config records them."""
        if self.cluster is not None:
            return self.cluster
        return gin.get_configurable(LocalCluster)()

    def start(self) -> contextlib.AbstractContextManager[Executor]:
        """The cluster's executor for one run."""
        return self.where().start(self.worker_timeout)


def local_processes(cluster: Cluster) -> int:
    """How many batches run at once in this machine's memory (0: the workers are elsewhere)."""
    if isinstance(cluster, LocalCluster):
        return cluster.n_workers
    return 1 if isinstance(cluster, InProcess) else 0


@contextlib.contextmanager
def connect(
    workers: int, scheduler: str | None = None, timeout: float = 10.0,
    worker_timeout: float = 300.0,
) -> Iterator[Executor]:  # fmt: skip
    """An executor without gin, for scripts and tests: ``workers`` local processes (0 runs in
    this process), or the scheduler at ``scheduler``."""
    if scheduler is not None:
        cluster: Cluster = Scheduler(scheduler, timeout)
    else:
        cluster = InProcess() if workers == 0 else LocalCluster(workers)
    with cluster.start(worker_timeout) as executor:
        yield executor
