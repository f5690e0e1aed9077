"""One writer per directory: a second writer is refused naming the holder; a lock left by a
killed process is taken over; the lock is released on every way out; forked children (Dask
workers) never hold it."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from epgkit.run.lock import LOCK, Busy, DirLock, claim
from epgkit.run.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["gin/quickstart.gin", "gin/debug.gin", "--workers", "0"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epgkit.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def start(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "epgkit.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            **kw)  # fmt: skip


def wait_for_epochs(proc: subprocess.Popen, run: Path, epochs: int) -> None:
    """Waits until the run has logged ``epochs`` epochs (fails if it ended first)."""
    deadline = time.time() + 240
    while len(RunDir(run).metrics()) < epochs:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the run logged no epoch in time"
        time.sleep(0.05)


def terminated(proc: subprocess.Popen) -> str:
    """Stops ``proc`` with SIGTERM (killed if it does not stop) and returns its stderr; it
    must have exited with SIGTERM's code, 143."""
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    return err


def epochs(run: Path) -> list[int]:
    return [m["epoch"] for m in RunDir(run).metrics()]


def test_a_second_writer_is_refused_naming_the_holder_and_sigterm_releases_the_lock(tmp_path):
    run = tmp_path / "run"
    first = start("evolve", *QUICK, "--run-dir", str(run), "-b", "Experiment.epochs = 10_000")
    try:
        wait_for_epochs(first, run, 1)
        for second in (["evolve", "--resume", str(run)],
                       ["evolve", *QUICK, "--run-dir", str(run)]):  # fmt: skip
            out = cli(*second)
            assert out.returncode == 2, out.stderr
            (line,) = out.stderr.strip().splitlines()
            assert f"{run} is in use by PID {first.pid} on host {platform.node()} (since " in line
    finally:
        err = terminated(first)
    assert "Traceback" not in err, err
    said = (run / "log.txt").read_text()  # as on the terminal
    assert (
        f"stopped; every finished epoch is checkpointed: continue with `epgkit evolve "
        f"--resume {run}`" in said
    ), said
    assert not (run / LOCK).exists()  # released on SIGTERM
    # The epochs done are the checkpoint's: a SIGTERM between its save and the logs' append
    # leaves metrics.jsonl a line short, which the resume writes from the checkpoint.
    done = RunDir(run).checkpoint()["epoch"]
    more = cli("evolve", "--resume", str(run), "-b", f"Experiment.epochs = {done + 1}")
    assert more.returncode == 0, more.stderr
    assert epochs(run) == list(range(done + 1))  # every epoch once: no second writer wrote
    assert not (run / LOCK).exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    run = tmp_path / "run"
    # Dask workers: the driver dies, its worker processes may live on for a moment.
    killed = start("evolve", *QUICK[:2], "--workers", "1", "--run-dir", str(run),
                   "-b", "Experiment.epochs = 10_000", start_new_session=True)  # fmt: skip
    try:
        wait_for_epochs(killed, run, 1)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert json.loads((run / LOCK).read_text())["pid"] == killed.pid  # left behind
        done = RunDir(run).checkpoint()["epoch"]  # the logs may be a line short (above)
        resumed = cli("evolve", "--resume", str(run), "--workers", "0",
                      "-b", f"Experiment.epochs = {done + 1}")  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):  # the killed run's workers, if any live
            os.killpg(killed.pid, signal.SIGKILL)
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock of {run}, left by PID {killed.pid} on host" in resumed.stderr
    assert epochs(run) == list(range(done + 1)) and not (run / LOCK).exists()


FORK_AND_DIE = """
import os, sys, time
from epgkit.run.lock import DirLock

lock = DirLock(sys.argv[1]).acquire()  # held while the handle lives
child = os.fork()
if child == 0:  # like a Dask worker forked by the driver: inherits every descriptor
    sys.stdin.read()  # lives until the test closes our stdin
    os._exit(0)
print(child, flush=True)
time.sleep(600)
"""


def test_a_forked_child_does_not_keep_the_lock_of_its_killed_parent(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", FORK_AND_DIE, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        child = int(holder.stdout.readline())
        with pytest.raises(Busy, match=f"PID {holder.pid} on host"):
            DirLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the child still runs, with the lock file open
        with DirLock(tmp_path):
            pass
    finally:
        holder.stdin.close()  # the child ends
        holder.kill()
        holder.wait()
    assert f"took over the lock of {tmp_path}, left by PID {holder.pid}" in capsys.readouterr().err
    assert not (tmp_path / LOCK).exists()


def test_a_lock_is_reentrant_in_its_process_and_a_released_start_leaves_no_trace(tmp_path):
    where = tmp_path / "runs" / "new"
    outer = DirLock(where).acquire()
    with DirLock(where):  # the same process: a sweep's point, a library caller
        pass
    assert (where / LOCK).is_file()  # still held by ``outer``
    outer.release()
    outer.release()  # a second release is harmless
    assert list(tmp_path.iterdir()) == []  # the folders the lock made are gone


def test_claims_of_one_name_get_a_folder_each_and_never_a_used_one(tmp_path):
    (tmp_path / "20261202-120000").mkdir()  # a run's, say
    a_path, a = claim(tmp_path, "20261202-120000")
    b_path, b = claim(tmp_path, "20261202-120000")  # the same second, in one process
    assert (a_path.name, b_path.name) == ("20261202-120000-2", "20261202-120000-3")
    assert (a_path / LOCK).is_file() and (b_path / LOCK).is_file()
    a.release()
    b.release()
    assert [p.name for p in tmp_path.iterdir()] == ["20261202-120000"]  # unused claims go


def test_sweep_refuses_a_sweep_or_a_point_in_use_and_resumes_once_free(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", *QUICK, "--grid", "OpenES.sigma=[0.01, 0.02]", "--out", str(out),
            "-b", "Experiment.epochs = 1"]  # fmt: skip
    me = f"is in use by PID {os.getpid()} on host {platform.node()}"
    with DirLock(out):  # held by this test process
        refused = cli(*args)
        assert refused.returncode == 2 and me in refused.stderr, refused.stderr
        assert [p.name for p in out.iterdir()] == [LOCK]  # nothing written
    assert not out.exists()
    assert cli(*args).returncode == 0
    point = out / "OpenES.sigma=0.02"
    shutil.rmtree(point)  # as if the sweep had stopped before this point
    with DirLock(point):
        stopped = cli(*args)
        assert stopped.returncode == 2 and f"{point} {me}" in stopped.stderr, stopped.stderr
        assert "Traceback" not in stopped.stderr and not (out / LOCK).exists()
        assert "point 2/2 OpenES.sigma=0.02: starting" in stopped.stdout
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "OpenES.sigma=0.01: finished" in again.stdout
    assert epochs(point) == [0] and not (out / LOCK).exists() and not (point / LOCK).exists()


def test_sigterm_stops_a_training_saying_so_and_releases_its_folder(tmp_path):
    out = tmp_path / "t"
    proc = start("train", "zoo:pointgoal", "--runs", "100000", "--workers", "0", "--out",
                 str(out))  # fmt: skip
    try:
        deadline, log = time.time() + 120, out / "log.txt"
        while not (log.is_file() and "test-time training on" in log.read_text()):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the training logged no progress in time"
            time.sleep(0.05)
    finally:
        err = terminated(proc)
    assert "Traceback" not in err, err
    assert "stopped before the summary" in (out / "log.txt").read_text()
    assert not (out / LOCK).exists()
    again = cli("train", "zoo:pointgoal", "--runs", "1", "--steps", "64", "--workers", "0",
                "--out", str(out))  # fmt: skip
    assert again.returncode == 0 and (out / "summary.json").is_file(), again.stderr
