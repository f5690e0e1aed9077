"""Dask workers as Kubernetes pods, through the Dask operator (``pip install 'epgkit[k8s]'``).

``dask_kubernetes.operator.KubeCluster`` creates a ``DaskCluster`` resource: a scheduler pod
and ``workers`` worker pods of ``image``, which must hold the same epgkit, torch and Python as
the driver (workers unpickle the driver's inner loops). A pod that dies is recreated by the
operator and the scheduler reruns its lost tasks elsewhere, with the same results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method.executor import Executor
from epgkit.registry import register
from epgkit.run.dask_cluster import DaskExecutor, SchedulerUnreachable, quiet_dask


@register("cluster")
@dataclass(frozen=True)
class KubeCluster:
    """Dask workers in Kubernetes pods (``gin/clusters/kubernetes.gin``).

    Attributes:
        image: Container image of the scheduler and workers, with epgkit installed.
        workers: Worker pods, each one single-threaded Dask worker.
        cpu: CPU request and limit of a worker pod (Kubernetes quantity, ``'1'``, ``'500m'``).
        memory: Memory request and limit of a worker pod (``'4Gi'``).
        namespace: Where the DaskCluster is made; None: the kubeconfig's current namespace.
        name: Name of the DaskCluster resource.
    """

    image: str | None = None
    workers: int = 8
    cpu: str = "1"
    memory: str = "4Gi"
    namespace: str | None = None
    name: str = "epgkit"

    def __post_init__(self) -> None:
        checks.check(self)
        if self.workers < 1:
            raise ValueError(f"KubeCluster: workers must be ≥ 1, got {self.workers}")

    def options(self) -> dict[str, Any]:
        """``dask_kubernetes.operator.KubeCluster``'s arguments."""
        if not self.image:
            raise ConfigError(
                "KubeCluster.image is not set: name an image with epgkit installed, "
                "e.g. -b \"KubeCluster.image = 'registry.example.org/you/epgkit:0.1.0'\""
            )
        quantity = {"cpu": self.cpu, "memory": self.memory}
        return {
            "name": self.name,
            "image": self.image,
            "n_workers": self.workers,
            # Requests equal to limits: a worker gets the CPU it counts on (Guaranteed QoS).
            "resources": {"requests": quantity, "limits": quantity},
            "env": {"OMP_NUM_THREADS": "1"},
            # One thread per worker, as everywhere else (FACTS.md: a second never helped).
            "worker_command": "dask-worker --nthreads 1",
            **({"namespace": self.namespace} if self.namespace else {}),
        }

    def describe(self) -> str:
        return f"Kubernetes: {self.workers} worker pod(s) of {self.image}"

    @contextmanager
    def start(self, worker_timeout: float) -> Iterator[Executor]:
        """Creates the DaskCluster and deletes it on exit."""
        options = self.options()
        try:
            from dask_kubernetes.operator import KubeCluster as OperatorCluster
        except ImportError:
            raise ConfigError(
                "KubeCluster needs dask-kubernetes, which is not installed: "
                "pip install 'epgkit[k8s]'"
            ) from None
        from dask.distributed import Client

        quiet_dask()
        try:
            cluster = OperatorCluster(**options)
        except Exception as err:  # noqa: BLE001  (no credentials, no server, no operator: all alike)
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise SchedulerUnreachable(
                f"KubeCluster could not create its Dask cluster: {type(err).__name__}: {detail} "
                "(is kubectl configured for a cluster with the Dask operator installed?)"
            ) from None
        try:
            with Client(cluster) as client:
                yield DaskExecutor(client, worker_timeout=worker_timeout)
        finally:
            cluster.close()
