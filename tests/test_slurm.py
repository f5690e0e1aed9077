"""A real SLURM: an evolution whose Dask workers are SLURM jobs gets the metrics of an in-process
run (same seed and batch size → same bits), also when SLURM cancels one of its jobs mid-run.

Uses the SLURM that ``sinfo`` reaches, or else starts a one-node one with
``scripts/slurm-local.sh`` (as root) and stops it afterwards; skipped when neither can be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from epgkit.method.evolve import evolve
from epgkit.method.experiment import Experiment
from epgkit.run import config
from epgkit.run.cluster import InProcess
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
    evolve(exp, reference, InProcess())

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
