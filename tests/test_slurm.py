"""A real SLURM: an evolution whose Dask workers are SLURM jobs gets the metrics of an in-process
run (same seed and batch size → same bits), also when SLURM cancels one of its jobs mid-run, and
so does ``epgkit evolve ... gin/clusters/slurm.gin`` from the command line, resumed on SLURM.

Uses the SLURM that ``sinfo`` reaches, or else starts a one-node one with
``scripts/slurm-local.sh`` (as root) and stops it afterwards; skipped when neither can be had.
"""

from __future__ import annotations

import os
import shutil
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
from epgkit.run.rundir import RunDir
from epgkit.run.slurm import SlurmCluster

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm-local.sh"

pytestmark = pytest.mark.slow


def _sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def slurm():
    """A SLURM that accepts jobs for the length of this module."""
    if _sinfo_answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM answers and scripts/slurm-local.sh needs root")
    folder = Path("/tmp/epgkit-slurm-test")
    env = {**os.environ, "EPGKIT_SLURM_DIR": str(folder)}
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    if started.returncode != 0:
        pytest.skip(f"scripts/slurm-local.sh start failed: {started.stderr.strip()}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")  # sbatch, squeue and scancel read it
    try:
        yield
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "wall_s"} for m in RunDir(path).metrics()]


def _our_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", "dask-worker", "-t", "RUNNING", "-o", "%i"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    return out.stdout.split()


def test_workers_as_slurm_jobs_give_the_in_process_metrics_even_when_a_job_is_cancelled(
    tmp_path, slurm
):
    config.parse(["quickstart.gin", "debug.gin"], ["Experiment.epochs = 4",
                                                   "InnerLoop.steps = 1024"])  # fmt: skip
    exp = config.build(Experiment)
    reference = RunDir(tmp_path / "reference")
    reference.create("", [])
    evolve(exp, reference, Serial())

    on_slurm = RunDir(tmp_path / "slurm")
    on_slurm.create("", [])
    log = on_slurm.path / "metrics.jsonl"
    cancelled: list[str] = []

    def cancel_a_job_during_the_second_epoch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not (log.exists() and log.read_text().count("\n")):
            time.sleep(0.05)
        jobs = _our_jobs()
        if jobs:
            subprocess.run(["scancel", jobs[0]], timeout=30)
            cancelled.append(jobs[0])

    cluster = SlurmCluster(jobs=2, memory="1GB", walltime="00:30:00",
                           log_directory=str(tmp_path / "slurm-logs"))  # fmt: skip
    with cluster.start(worker_timeout=300) as executor:
        executor.client.wait_for_workers(2, timeout=120)
        canceller = threading.Thread(target=cancel_a_job_during_the_second_epoch)
        canceller.start()
        evolve(exp, on_slurm, executor)
        canceller.join()
    assert cancelled  # SLURM really lost a job (and its worker) during the run
    assert metrics(on_slurm.path) == metrics(reference.path)
    deadline = time.time() + 60
    while _our_jobs() and time.time() < deadline:  # leaving the cluster cancels its jobs
        time.sleep(1)
    assert not _our_jobs()


def epgkit(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``epgkit ARGS`` in a subprocess, and its wall time. PYTHONPATH names this checkout so that
    the SLURM jobs' workers (whose environment sbatch copies) import the driver's epgkit."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "epgkit.cli", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    return out, time.perf_counter() - start


def test_the_cli_on_slurm_gets_the_in_process_metrics_and_resumes_on_slurm(tmp_path, slurm):
    on_slurm, in_process = tmp_path / "slurm", tmp_path / "inprocess"
    size = ["-b", "SlurmCluster.jobs = 2", "-b", "SlurmCluster.memory = '1GB'",
            "-b", "SlurmCluster.walltime = '00:30:00'",
            "-b", f"SlurmCluster.log_directory = '{tmp_path / 'slurm-logs'}'"]  # fmt: skip
    out, slurm_s = epgkit("evolve", "gin/quickstart.gin", "gin/debug.gin",
                          "gin/clusters/slurm.gin", *size, "--run-dir", str(on_slurm))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "on SLURM: 2 job(s) × 1 worker(s)" in out.stdout
    assert len(metrics(on_slurm)) == 2  # debug.gin's epochs

    # The recorded run resumes on SLURM (its config.gin chooses the cluster) for one more epoch.
    out, resume_s = epgkit("evolve", "--resume", str(on_slurm), "-b", "Experiment.epochs = 3")
    assert out.returncode == 0, out.stderr
    assert "on SLURM" in out.stdout and "epoch    3/3" in out.stdout

    out, reference_s = epgkit("evolve", "gin/quickstart.gin", "gin/debug.gin", "--workers",
                              "0", "-b", "Experiment.epochs = 3", "--run-dir",
                              str(in_process))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert metrics(on_slurm) == metrics(in_process)  # same seed and K: the same bits
    print(
        f"wall time: SLURM {slurm_s:.0f} s (2 epochs), resumed on SLURM {resume_s:.0f} s "
        f"(1 epoch), in-process {reference_s:.0f} s (3 epochs)"
    )
    assert not _our_jobs()  # the CLI's exit cancelled its jobs
