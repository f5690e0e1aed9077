"""The Dask boundary never waits without a bound: a port that is not a Dask scheduler, a
cluster whose workers all died. Every wait here is set to a second or two."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from epgkit.run.cluster import DaskExecutor, NoWorkers
from epgkit.run.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["gin/quickstart.gin", "gin/debug.gin", "-b", "InnerLoop.steps = 512"]


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``epgkit ARGS`` in a child process; a hang fails the test at ``timeout``."""
    return subprocess.run([sys.executable, "-m", "epgkit.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in [*held, listener]:
        conn.close()


@pytest.fixture
def http_port() -> Iterator[str]:
    """A port where an HTTP server listens."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


COMMANDS = {
    "evolve": ["evolve", *QUICK, "--run-dir"],
    "train": ["train", "zoo:pointgoal", "--runs", "1", "--out"],
    "sweep": ["sweep", *QUICK, "--grid", "OpenES.sigma=[0.01]", "--out"],
}


@pytest.mark.parametrize(
    ("command", "server"),
    [("evolve", "silent_port"), ("evolve", "http_port"), ("train", "silent_port"),
     ("sweep", "http_port")],
)  # fmt: skip
def test_a_port_that_is_not_a_dask_scheduler_ends_in_one_message_and_writes_nothing(
    tmp_path, request, command, server
):
    address = request.getfixturevalue(server)
    out = tmp_path / "out"
    done = cli(*COMMANDS[command], str(out), "--scheduler", address,
               "-b", "Scheduler.connect_timeout = 1")  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"epgkit: error: no Dask scheduler answered at {address} within 1 s")
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_an_executor_on_a_cluster_without_workers_gives_up_after_worker_timeout():
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        executor = DaskExecutor(client, timeout=5, worker_timeout=0.5)
        with pytest.raises(NoWorkers, match=r"no worker for 0.5 s \(Launch.worker_timeout\)"):
            executor.map(divmod, [(7, 2)])


@pytest.fixture
def dask_cli_cluster() -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """(address, scheduler, workers) started with Dask's own CLI; the workers (nannies and their
    worker processes) form one process group, so that all of them can be killed at once."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"], **quiet)  # fmt: skip
    workers = subprocess.Popen([str(bindir / "dask"), "worker", address, "--nworkers", "2",
                                "--nthreads", "1", "--no-dashboard"], start_new_session=True,
                               **quiet)  # fmt: skip
    yield address, scheduler, workers
    if workers.poll() is None:
        os.killpg(workers.pid, signal.SIGKILL)
    scheduler.kill()  # also when stopped (SIGSTOP)
    for proc in (workers, scheduler):
        proc.wait()


def evolve_on(address: str, run: Path, *bindings: str) -> subprocess.Popen:
    """``epgkit evolve`` of many epochs on the cluster at ``address``, once it has logged one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "epgkit.cli", "evolve", *QUICK, "-b", "Experiment.epochs = 60",
         "--run-dir", str(run), "--scheduler", address,
         *(x for b in bindings for x in ("-b", b))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(RunDir(run).metrics()) < 1:
        time.sleep(0.2)
    return proc


def stopped_resumable(proc: subprocess.Popen, run: Path, reason: str) -> int:
    """Checks that the run ended in one line saying ``reason`` and how to resume; returns the
    epochs it finished, all checkpointed."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    assert reason in last and "Traceback" not in err, err
    assert last.endswith(f"continue with `epgkit evolve --resume {run}`")
    finished = len(RunDir(run).metrics())
    assert 1 <= finished < 60 and RunDir(run).load_checkpoint()["epoch"] == finished
    return finished


@pytest.mark.slow  # starts Dask clusters and kills their processes: tens of seconds
def test_an_external_cluster_whose_workers_all_die_stops_the_run_resumable(
    tmp_path, dask_cli_cluster
):
    address, _, workers = dask_cli_cluster
    run = tmp_path / "run"
    proc = evolve_on(address, run, "Scheduler.connect_timeout = 30", "Launch.worker_timeout = 2")
    os.killpg(workers.pid, signal.SIGKILL)  # every worker, and the nannies that would restart them
    workers.wait()
    finished = stopped_resumable(
        proc, run, f"the Dask cluster at {address} has had no worker for 2 s"
    )

    # The checkpoint is consistent: the run goes on from it, here in-process.
    more = cli("evolve", "--resume", str(run), "--workers", "0",
               "-b", f"Experiment.epochs = {finished + 1}")  # fmt: skip
    assert more.returncode == 0, more.stderr
    assert [m["epoch"] for m in RunDir(run).metrics()] == list(range(finished + 1))


@pytest.mark.slow  # starts Dask clusters and kills their processes: tens of seconds
def test_a_scheduler_that_stops_answering_stops_the_run_resumable(tmp_path, dask_cli_cluster):
    address, scheduler, _ = dask_cli_cluster
    run = tmp_path / "run"
    proc = evolve_on(address, run, "Scheduler.connect_timeout = 5", "Launch.worker_timeout = 5")
    scheduler.send_signal(signal.SIGSTOP)  # alive, connected, and silent
    stopped_resumable(proc, run, f"the Dask scheduler at {address} has not answered for 5 s")


def test_an_address_of_another_scheme_is_named_as_such_without_a_wait():
    from epgkit.run.cluster import SchedulerUnreachable
    from epgkit.run.dask_cluster import _handshake

    with pytest.raises(SchedulerUnreachable) as err:
        _handshake("http://127.0.0.1:8786", timeout=30)
    assert "is no Dask address: unknown address scheme 'http'" in str(err.value)
    assert "within" not in str(err.value)  # refused at once, not after waiting 30 s
