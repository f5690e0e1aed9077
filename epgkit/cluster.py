"""The Dask boundary: where batches of inner loops run.

``connect`` gives an executor with one method, ``map(fn, items)``, returning results in
order. By default it starts (and stops) an embedded ``LocalCluster`` with one single-threaded
worker process per core; ``scheduler="tcp://HOST:PORT"`` uses a running cluster instead;
``workers=0`` runs everything in this process, for debugging.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from typing import Any, Protocol


class Executor(Protocol):
    """Runs a function over items and returns the results in order."""

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]: ...


class InProcess:
    """Runs tasks one after another in this process."""

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        results = []
        for i, item in enumerate(items):
            results.append(fn(*item))
            if on_done is not None:
                on_done(i)
        return results


class SchedulerUnreachable(RuntimeError):
    """The Dask scheduler given by address could not be reached."""


class SchedulerLost(RuntimeError):
    """The connection to the Dask scheduler broke during a run."""


class DaskExecutor:
    """Runs tasks on a Dask cluster.

    A task lost with a dead worker is resubmitted by the scheduler (its result is the same,
    since a task depends only on its inputs); a lost scheduler raises ``SchedulerLost``.
    """

    def __init__(self, client: Any, retries: int = 3) -> None:
        self.client, self.retries = client, retries

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        from distributed import as_completed
        from distributed.comm.core import CommClosedError

        address = self.client.scheduler.address
        try:
            futures = [
                self.client.submit(fn, *item, pure=False, retries=self.retries) for item in items
            ]
            if on_done is not None:  # progress: each task as it finishes, in any order
                index = {future.key: i for i, future in enumerate(futures)}
                for future in as_completed(futures):
                    on_done(index[future.key])
            return self.client.gather(futures)
        except (CancelledError, CommClosedError, OSError, TimeoutError) as err:
            raise SchedulerLost(
                f"lost the Dask scheduler at {address} ({type(err).__name__}: {err})"
            ) from None


@contextmanager
def connect(
    workers: int, scheduler: str | None = None, timeout: float = 10.0
) -> Iterator[Executor]:
    """An executor for the run; the local cluster it may start is stopped on exit."""
    if scheduler is None and workers == 0:
        yield InProcess()
        return
    from dask.distributed import Client, LocalCluster

    # Dask's INFO chatter (scheduler addresses, nannies) would drown the epoch lines.
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A lost scheduler makes these log tracebacks; SchedulerLost says it in one line instead.
    for name in ("distributed.client", "distributed.utils"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, ValueError) as err:
            raise SchedulerUnreachable(
                f"no Dask scheduler answered at {scheduler} within {timeout:g} s ({err})"
            ) from None
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            client.close()
            raise SchedulerUnreachable(
                f"the Dask scheduler at {scheduler} has no workers (waited {timeout:g} s)"
            ) from None
        try:
            yield DaskExecutor(client)
        finally:
            client.close()
        return
    # Dask's scheduler serves /health on port 8787 even without a dashboard, and warns when
    # another run holds that port; it then picks a free one, which is all we need.
    warnings.filterwarnings("ignore", message="Port 8787 is already in use")
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield DaskExecutor(client)
    finally:
        client.close()
        cluster.close()
