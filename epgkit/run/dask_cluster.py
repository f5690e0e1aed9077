"""The Dask boundary: an executor over a Dask client, and the two ways of getting one.

``local`` starts (and stops) an embedded Dask ``LocalCluster``; ``remote`` connects to a running
scheduler. Both yield a ``DaskExecutor``, whose ``map(fn, items)`` returns results in order.
The clusters a config chooses (``epgkit.run.cluster``) are built on these.

No wait is unbounded: reaching a scheduler takes at most ``timeout`` seconds (also when the
address is some other server, which Dask's own handshake would wait for forever); a lost
scheduler ends a run within about as long (Dask's client gives up on it), and a run whose
cluster shows no worker, or whose scheduler stops answering, for ``worker_timeout`` seconds stops
with ``NoWorkers``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from typing import Any

from epgkit.method.executor import Executor

__all__ = ["DaskExecutor", "Executor", "NoWorkers", "SchedulerLost", "SchedulerUnreachable",
           "local", "remote"]  # fmt: skip


class SchedulerUnreachable(RuntimeError):
    """The Dask scheduler given by address could not be reached."""


class SchedulerLost(RuntimeError):
    """The connection to the Dask scheduler broke during a run."""


class NoWorkers(SchedulerLost):
    """The cluster showed no worker (or its scheduler no answer) for longer than the run may
    wait for one."""


#: Seconds between two looks at the cluster while no task finishes.
POLL = 1.0


class DaskExecutor:
    """Runs tasks on a Dask cluster.

    A task lost with a dead worker is resubmitted by the scheduler (its result is the same,
    since a task depends only on its inputs); a lost scheduler raises ``SchedulerLost``, and a
    cluster without any worker, or a scheduler without an answer, for ``worker_timeout`` seconds
    raises ``NoWorkers``.
    """

    def __init__(
        self,
        client: Any,
        retries: int = 3,
        timeout: float = 10.0,
        worker_timeout: float = 300.0,
        dashboard: str | None = None,
    ) -> None:
        self.client, self.retries = client, retries
        self.timeout, self.worker_timeout = timeout, worker_timeout
        self.dashboard = dashboard  # the URL of the cluster's dashboard, when it serves one

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
            index = {future.key: i for i, future in enumerate(futures)}
            finished: queue.Queue[Any] = queue.Queue()

            def collect() -> None:  # each task as it finishes (or is cancelled), in any order
                try:
                    for future in as_completed(futures, loop=self.client.loop):
                        finished.put(future)
                except Exception as err:  # noqa: BLE001  (raised below, in the caller's thread)
                    finished.put(err)

            threading.Thread(target=collect, name="epgkit-tasks", daemon=True).start()
            alone_since = None
            for _ in futures:
                while True:
                    try:
                        future = finished.get(timeout=min(POLL, self.worker_timeout / 2))
                        break
                    except queue.Empty:  # nothing finished for a while: is anyone working?
                        alone_since = self._check_workers(address, alone_since)
                if isinstance(future, Exception):
                    raise future
                alone_since = None
                if on_done is not None:
                    on_done(index[future.key])
            return self.client.gather(futures)
        except (CancelledError, CommClosedError, OSError, TimeoutError) as err:
            raise SchedulerLost(
                f"lost the Dask scheduler at {address} ({type(err).__name__}: {err})"
            ) from None

    def _check_workers(self, address: str, alone_since: float | None) -> float | None:
        """Since when the cluster has shown no worker (None: it shows some now). A scheduler
        that does not answer within ``timeout`` seconds shows none: a slow answer on a busy
        machine is no reason to stop, a scheduler that never answers again is.

        Raises:
            NoWorkers: No worker seen for longer than ``worker_timeout`` seconds.
        """
        try:
            answered, workers = True, bool(self.client.nthreads(callback_timeout=self.timeout))
        except OSError:  # TimeoutError, CommClosedError: no answer (a lost one ends `wait`)
            answered, workers = False, False
        if workers:
            return None
        now = time.monotonic()
        if alone_since is None:
            return now
        if now - alone_since > self.worker_timeout:
            if answered:
                why = f"the Dask cluster at {address} has had no worker"
            else:
                why = f"the Dask scheduler at {address} has not answered"
            raise NoWorkers(f"{why} for {self.worker_timeout:g} s (Launch.worker_timeout)")
        return alone_since


def _handshake(address: str, timeout: float) -> None:
    """Raises ``SchedulerUnreachable`` unless a Dask scheduler answers at ``address`` within
    ``timeout`` seconds.

    Dask's ``Client`` waits for the scheduler's handshake without a deadline, so on a port where
    another server listens (an HTTP server, a socket that never answers) it would wait forever.
    """
    from distributed.comm import connect as dask_connect

    async def handshake() -> None:
        # Dask's own deadline covers reaching the port (and says why it failed), not the reply.
        comm = await asyncio.wait_for(dask_connect(address, timeout=timeout), timeout + 1.0)
        await comm.close()

    failure: list[BaseException] = []

    def attempt() -> None:  # a thread of its own: the caller may run an event loop already
        try:
            asyncio.run(handshake())
        except Exception as err:  # noqa: BLE001  (reported below, in the caller's thread)
            failure.append(err)

    thread = threading.Thread(target=attempt, name="epgkit-handshake", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)  # asyncio.wait_for ends it sooner; this is a backstop
    if thread.is_alive() or failure:
        err = failure[0] if failure else TimeoutError()
        detail = str(err).splitlines()[0] if str(err) else "a server there does not speak Dask"
        if "unknown address scheme" in detail:  # refused at once: no wait to speak of
            raise SchedulerUnreachable(
                f"{address} is no Dask address: {detail}; give the address of a running `dask "
                "scheduler`, e.g. tcp://host:8786"
            )
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:g} s ({detail}); "
            "give the address of a running `dask scheduler` (Scheduler.connect_timeout "
            "sets the wait)"
        )


def quiet_dask() -> None:
    # Dask's INFO chatter (scheduler addresses, nannies) would drown the epoch lines.
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A lost scheduler makes these log tracebacks; SchedulerLost says it in one line instead.
    for name in ("distributed.client", "distributed.utils"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def remote(address: str, timeout: float, worker_timeout: float) -> Iterator[DaskExecutor]:
    """An executor on the running Dask scheduler at ``address``, with at least one worker.

    Args:
        address: ``tcp://HOST:PORT`` of the scheduler.
        timeout: Seconds to wait for the scheduler and its first worker (and for each answer of
            the scheduler during the run).
        worker_timeout: Seconds a run waits while the cluster shows no worker at all, or its
            scheduler no answer.

    Raises:
        SchedulerUnreachable: No scheduler answered, or it has no worker, within ``timeout``.
    """
    from dask.distributed import Client

    quiet_dask()
    _handshake(address, timeout)
    try:
        client = Client(address, timeout=timeout)
    except (OSError, ValueError) as err:
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:g} s ({err})"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise SchedulerUnreachable(
            f"the Dask scheduler at {address} has no workers (waited {timeout:g} s)"
        ) from None
    try:
        yield DaskExecutor(client, timeout=timeout, worker_timeout=worker_timeout)
    finally:
        client.close()


@contextmanager
def local(workers: int, worker_timeout: float, dashboard: bool = False) -> Iterator[DaskExecutor]:
    """An executor on an embedded Dask cluster of ``workers`` single-threaded processes,
    stopped on exit.

    Args:
        workers: Worker processes (≥ 1).
        worker_timeout: Seconds a run waits while the cluster shows no worker at all.
        dashboard: Serve Dask's dashboard (needs ``bokeh``) on a free port; the executor's
            ``dashboard`` says where.
    """
    from dask.distributed import Client, LocalCluster

    quiet_dask()
    # Dask's scheduler serves /health on port 8787 even without a dashboard, and warns when
    # another run holds that port; it then picks a free one, which is all we need.
    warnings.filterwarnings("ignore", message="Port 8787 is already in use")
    with _sigint_ignored():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0" if dashboard else None,
            # A worker's log goes to the user's terminal; what matters of it reaches the run as
            # a result or a lost worker, while its ERRORs during our own shutdown (a heartbeat
            # that finds the scheduler closing, on a busy machine) would only alarm.
            silence_logs=logging.CRITICAL,
        )
    client = Client(cluster)
    link = client.dashboard_link if dashboard else None
    try:
        yield DaskExecutor(client, worker_timeout=worker_timeout, dashboard=link)
    finally:
        client.close()
        # Our own shutdown: on a busy machine a worker may outlive the nanny's grace period,
        # and its "still alive after 4.0 seconds, killing" warning is no news to the user.
        logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
        cluster.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the local cluster starts its processes, which keep that (a child
    inherits an ignored signal): Ctrl-C reaches the whole process group, and the driver alone
    should act on it, closing the cluster, instead of every worker printing its traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def idle_workers(inner_loops: int, batch_size: int, workers: int) -> str | None:
    """A note when an epoch has fewer Dask tasks than the cluster has workers, else None.

    An epoch is ``ceil(W / K)`` tasks of ``K = Experiment.batch_size`` inner loops. K is not
    chosen from the cluster's size at run time: it is part of the determinism contract (same
    seed and K, same bits on any number of workers), so the user fixes it in the config, by
    the rule K ≤ W / workers.
    """
    tasks = -(-inner_loops // batch_size)
    if tasks >= workers:
        return None
    best = max(1, inner_loops // workers)
    return (
        f"an epoch is {tasks} tasks of Experiment.batch_size = {batch_size} inner loops, so "
        f"{workers - tasks} of {workers} workers idle; Experiment.batch_size = {best} gives "
        "each worker a task (the batch size is part of the run's results, so fix it when the "
        "run starts)"
    )
