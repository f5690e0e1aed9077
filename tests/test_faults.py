"""Faults: SIGKILL at any moment, a dead Dask worker, a lost scheduler, corrupt checkpoints."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from epgkit.method.evolve import evolve
from epgkit.method.executor import Serial
from epgkit.method.experiment import Experiment
from epgkit.run import config
from epgkit.run.cluster import connect
from epgkit.run.launch import _check_resume_bindings
from epgkit.run.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["gin/quickstart.gin", "gin/debug.gin", "-b", "Experiment.epochs = 10",
         "-b", "InnerLoop.steps = 512"]  # fmt: skip


def epgkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "epgkit.cli", *args]


def metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "wall_s"} for m in RunDir(path).metrics()]


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess:
    """``epgkit ARGS`` in a child process from the repository root."""
    return subprocess.run(epgkit(*args), cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_epoch_run(run: Path) -> Path:
    done = cli("evolve", *QUICK, "--run-dir", str(run), "--workers", "0",
               "-b", "Experiment.epochs = 1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    run = tmp_path_factory.mktemp("whole") / "run"
    done = subprocess.run(epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return metrics(run)


def test_sigkill_at_several_moments_then_resume_gives_the_uninterrupted_metrics(
    tmp_path, uninterrupted
):
    run = tmp_path / "run"
    start = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0")
    resume = epgkit("evolve", "--resume", str(run))
    kills = 0
    # (epochs logged, then seconds later): while starting up, then at moments inside epochs.
    for logged, delay in ((0, 2.5), (2, 0.05), (4, 0.13), (6, 0.21), (8, 0.0)):
        cmd = resume if (run / "config.gin").exists() else start
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while (
            proc.poll() is None
            and time.time() < deadline
            and (not (run / "metrics.jsonl").exists() or len(RunDir(run).metrics()) < logged)
        ):
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 4
    final = subprocess.run(resume if (run / "config.gin").exists() else start, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert final.returncode == 0, final.stderr
    assert metrics(run) == uninterrupted


@pytest.mark.slow  # starts Dask clusters and kills their processes: tens of seconds
def test_a_killed_dask_worker_mid_epoch_changes_nothing(tmp_path):
    config.parse(["quickstart.gin"], ["Experiment.epochs = 3", "InnerLoop.steps = 1024"])
    exp = config.build(Experiment)
    reference = RunDir(tmp_path / "reference")
    reference.create("", [])
    evolve(exp, reference, Serial())

    faulty = RunDir(tmp_path / "faulty")
    faulty.create("", [])
    log = faulty.path / "metrics.jsonl"

    def kill_during_the_second_epoch(pid: int) -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and log.read_text().count("\n")):
            time.sleep(0.01)
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)

    with connect(2) as executor:
        client = executor.client
        client.run(lambda: __import__("torch"))  # pay the import before the epochs start
        before = set(client.run(os.getpid).values())
        killer = threading.Thread(target=kill_during_the_second_epoch, args=(min(before),))
        killer.start()
        evolve(exp, faulty, executor)
        killer.join()
        client.wait_for_workers(2, timeout=60)
        after = set(client.run(os.getpid).values())
    assert min(before) not in after  # the worker really died and was replaced
    assert len(RunDir(faulty.path).metrics()) == 3
    assert metrics(faulty.path) == metrics(reference.path)


@pytest.fixture
def dask_cli_cluster():
    """A cluster made with Dask's own CLI on loopback, as a user would start one."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    scheduler = subprocess.Popen(
        [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = subprocess.Popen(
        [str(bindir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
         "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    yield address, scheduler
    for proc in (worker, scheduler):
        proc.kill()
        proc.wait()


def test_ctrl_c_with_local_workers_is_one_line_and_the_run_resumes(tmp_path, uninterrupted):
    # A terminal's Ctrl-C reaches the whole process group: the driver and the Dask workers.
    run = tmp_path / "run"
    proc = subprocess.Popen(
        epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "2"), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while len(RunDir(run).metrics()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == "", err  # no worker's traceback
    assert out.strip().splitlines()[-1].startswith("epgkit: stopped; every finished epoch")
    done = cli("evolve", "--resume", str(run), "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert metrics(run) == uninterrupted


@pytest.mark.slow  # starts Dask clusters and kills their processes: tens of seconds
def test_a_dask_cli_cluster_gives_the_same_metrics_and_a_lost_scheduler_is_resumable(
    tmp_path, uninterrupted, dask_cli_cluster
):
    address, scheduler = dask_cli_cluster
    same = tmp_path / "same"
    done = subprocess.run(epgkit("evolve", *QUICK, "--run-dir", str(same), "--scheduler", address,
                                 "-b", "Scheduler.connect_timeout = 30"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert metrics(same) == uninterrupted

    lost = tmp_path / "lost"
    proc = subprocess.Popen(
        epgkit("evolve", *QUICK, "-b", "Experiment.epochs = 60", "--run-dir", str(lost),
               "--scheduler", address), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(RunDir(lost).metrics()) < 2:
        time.sleep(0.2)
    scheduler.kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert address in err and f"--resume {lost}" in err and "Traceback" not in err
    finished = len(RunDir(lost).metrics())
    assert finished >= 2 and RunDir(lost).load_checkpoint()["epoch"] == finished


def test_a_corrupt_checkpoint_or_log_is_refused_and_the_run_directory_is_untouched(tmp_path):
    run = one_epoch_run(tmp_path / "run")
    metrics_text = (run / "metrics.jsonl").read_text()
    for damaged in ("checkpoint.pt", "metrics.jsonl"):
        if damaged == "checkpoint.pt":
            good = (run / "checkpoint.pt").read_bytes()
            (run / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
        else:  # an edited log: a complete line that is not JSON
            (run / "metrics.jsonl").write_text("{not json\n" + metrics_text)
        before = snapshot(run)
        again = cli("evolve", "--resume", str(run))
        assert again.returncode == 2 and damaged in again.stderr, again.stderr
        assert "Traceback" not in again.stderr
        assert snapshot(run) == before
        if damaged == "checkpoint.pt":
            (run / "checkpoint.pt").write_bytes(good)


def test_an_unreachable_scheduler_names_its_address_and_writes_nothing(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    out = cli("evolve", *QUICK, "--run-dir", str(tmp_path / "r"), "--scheduler", address,
              "-b", "Scheduler.connect_timeout = 1")  # fmt: skip
    assert out.returncode == 2 and address in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_resume_refuses_changed_settings_untouched_and_records_more_epochs(tmp_path):
    run = one_epoch_run(tmp_path / "run")
    before = snapshot(run)
    for change in (["-b", "OpenES.population = 4"], ["-b", "EPGLoss.hidden = 8"], ["--seed", "5"]):
        refused = cli("evolve", "--resume", str(run), *change)
        assert refused.returncode == 2 and "cannot change" in refused.stderr, change
        assert "Traceback" not in refused.stderr
        assert snapshot(run) == before
    same = cli("evolve", "--resume", str(run), "-b", "Experiment.epochs = 1")
    assert same.returncode == 2 and "adds none" in same.stderr and snapshot(run) == before
    more = cli("evolve", "--resume", str(run), "--workers", "0", "-b", "Experiment.epochs = 2")
    assert more.returncode == 0, more.stderr
    assert [m["epoch"] for m in metrics(run)] == [0, 1]
    # The run's config.gin says what it ran: a later resume keeps the 2 epochs.
    assert (run / "config.gin").read_text().rstrip().endswith("Experiment.epochs = 2")


@pytest.mark.parametrize(
    ("bindings", "recorded"),
    [
        (["Experiment.epochs = (\n  20)"], ("Experiment.epochs = 20",)),  # gin's own syntax
        (["LocalCluster.workers = 2  # here\nExperiment.epochs = 5"], ("Experiment.epochs = 5",)),
        (["Launch.cluster = @Scheduler()\nScheduler.address = 'tcp://h:1'"], ()),
        (["Launch.worker_timeout = 5.0", "Launch.cluster = @InProcess()"], ()),
        # The names where-to-run had before Launch, as old runs and habits use them.
        (["Experiment.workers = 2  # here\nExperiment.epochs = 5"], ("Experiment.epochs = 5",)),
        (["Experiment.scheduler = 'tcp://h:1'"], ()),
    ],
)
def test_resume_bindings_are_read_as_gin_reads_them(bindings, recorded):
    assert _check_resume_bindings(bindings) == recorded


@pytest.mark.parametrize(
    "binding",
    [
        "ppo/InnerLoop.lr = 0.1",
        "import my_module",
        "OpenES.sigma = \\\n 0.1",
        "Launch.run_dir = 'elsewhere'",
    ],  # fmt: skip
)
def test_resume_refuses_scoped_bindings_imports_and_continued_lines(binding):
    with pytest.raises(config.ConfigError, match="cannot change"):
        _check_resume_bindings([binding])
