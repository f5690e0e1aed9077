"""Cluster back-ends as registered components: SLURM (dask-jobqueue) and Kubernetes
(dask-kubernetes), as far as no cluster is needed; a real SLURM is in tests/test_slurm.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gin
import pytest

from epgkit.components import registered
from epgkit.errors import ConfigError
from epgkit.run import config
from epgkit.run.kube import KubeCluster
from epgkit.run.slurm import SlurmCluster, seconds

CLUSTERS = [c for c in config.available() if c.startswith("clusters/")]


def test_slurm_and_kubernetes_are_registered_clusters_with_a_gin_file_each():
    assert {"SlurmCluster", "KubeCluster"} <= set(registered("cluster"))
    assert {"clusters/slurm.gin", "clusters/kubernetes.gin"} <= set(CLUSTERS)


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_files_parse_on_top_of_an_experiment_and_build_their_cluster(name):
    required = {"kubernetes": "KubeCluster.image = 'epgkit:test'",
                "scheduler": "Scheduler.address = 'tcp://127.0.0.1:8786'"}  # fmt: skip
    bindings = [b for key, b in required.items() if key in name]
    config.parse(["quickstart.gin", "debug.gin", name], bindings)
    cluster = gin.query_parameter("Launch.cluster").scoped_configurable_fn()
    assert type(cluster).__name__ in registered("cluster")
    assert cluster.describe()


def test_slurm_options_give_single_threaded_workers_of_this_python_that_retire_in_time():
    slurm = SlurmCluster(jobs=4, cores=8, walltime="1-00:00:00", queue="cpu", account="lab",
                         job_extra=("--qos=long",))  # fmt: skip
    options = slurm.options()
    assert slurm.workers == 32 and options["processes"] == options["cores"] == 8
    assert options["python"] == sys.executable
    assert options["queue"] == "cpu" and options["account"] == "lab"
    assert options["job_extra_directives"] == ["--qos=long"]
    lifetime = int(options["worker_extra_args"][0].removeprefix("--lifetime=").removesuffix("s"))
    assert lifetime == seconds("1-00:00:00") - 300
    assert SlurmCluster(walltime="00:05:00").options()["worker_extra_args"][0] == "--lifetime=270s"


def test_slurm_job_script_says_what_the_bindings_say():
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    slurm = SlurmCluster(cores=2, memory="2GB", queue="cpu", account="lab", job_extra=("--qos=x",))
    cluster = SLURMCluster(**slurm.options())
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p cpu", "#SBATCH -A lab", "#SBATCH --qos=x", "#SBATCH -t 04:00:00",
                 "--nthreads 1", "--nworkers 2", sys.executable):  # fmt: skip
        assert line in script, script


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"jobs": 0}, "jobs must be ≥ 1"),
        ({"walltime": "4h"}, "walltime '4h' is not"),
        ({"cores": 1.5}, "cores"),
    ],  # fmt: skip
)
def test_bad_slurm_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SlurmCluster(**kwargs)


def test_kubernetes_options_request_what_they_limit_with_single_threaded_workers():
    kube = KubeCluster(image="epgkit:test", workers=16, cpu="2", memory="8Gi", namespace="rl")
    options = kube.options()
    assert options["image"] == "epgkit:test" and options["n_workers"] == 16
    assert options["resources"]["requests"] == options["resources"]["limits"] == {
        "cpu": "2", "memory": "8Gi"}  # fmt: skip
    assert "--nthreads 1" in options["worker_command"] and options["namespace"] == "rl"
    with pytest.raises(ConfigError, match="KubeCluster.image is not set"):
        KubeCluster().options()


@pytest.mark.parametrize(
    "cluster,blocked,extra",
    [
        (SlurmCluster(), ("dask_jobqueue",), "epgkit[slurm]"),
        (
            KubeCluster(image="epgkit:test"),
            ("dask_kubernetes", "dask_kubernetes.operator"),
            "epgkit[k8s]",
        ),
    ],  # fmt: skip
)
def test_a_missing_package_is_one_line_naming_the_extra(cluster, blocked, extra, monkeypatch):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(ConfigError) as err, cluster.start(worker_timeout=1.0):
        pass
    assert len(str(err.value).splitlines()) == 1 and f"pip install '{extra}'" in str(err.value)


def test_kubernetes_that_cannot_create_the_cluster_is_one_line(monkeypatch):
    import types

    from epgkit.run.cluster import SchedulerUnreachable

    def no_credentials(**options):  # what dask-kubernetes raises without a kubeconfig
        raise ValueError("Unable to find valid credentials.\n\nTry creating a kubeconfig file.")

    operator = types.ModuleType("dask_kubernetes.operator")
    operator.KubeCluster = no_credentials
    monkeypatch.setitem(sys.modules, "dask_kubernetes", types.ModuleType("dask_kubernetes"))
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", operator)
    with (
        pytest.raises(SchedulerUnreachable) as err,
        KubeCluster(image="epgkit:test").start(worker_timeout=1.0),
    ):
        pass
    (line,) = str(err.value).splitlines()
    assert "could not create its Dask cluster: ValueError: Unable to find valid credentials" in line


@pytest.mark.parametrize(
    "w,k,workers,best",
    [
        (256, 8, 256, 1),
        (256, 8, 64, 4),
        (256, 4, 64, None),
        (256, 1, 64, None),
        (32, 8, 2, None),
        (20, 8, 4, 5),
    ],  # fmt: skip
)
def test_a_note_says_when_workers_would_idle_and_which_batch_size_fits(w, k, workers, best):
    from epgkit.run.dask_cluster import idle_workers

    note = idle_workers(w, k, workers)
    if best is None:
        assert note is None
    else:
        tasks = -(-w // k)
        assert f"{workers - tasks} of {workers} workers idle" in note
        assert f"Experiment.batch_size = {best} gives each worker a task" in note


@pytest.mark.parametrize("name", list(registered("cluster")))
def test_every_registered_clusters_defaults_pass_its_own_checks(name):
    from epgkit.method import checks

    required = {"Scheduler": {"address": "tcp://127.0.0.1:8786"}}  # fields without a default
    assert checks.problems(registered("cluster")[name](**required.get(name, {}))) == []


def test_slurm_without_sbatch_is_one_line_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    # This Python's folder alone on PATH: no sbatch, whatever this machine has installed.
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "epgkit.cli", "evolve", "quickstart", "debug.gin",
                          "clusters/slurm.gin", "--run-dir", str(run)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "sbatch, which is not on this machine's PATH" in line and not run.exists()


def test_slurm_that_would_not_take_a_job_is_one_line_before_anything_is_written(tmp_path):
    pytest.importorskip("dask_jobqueue")
    run, bin_dir = tmp_path / "run", tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"  # what sbatch says on a node that cannot reach the controller
    sbatch.write_text("#!/bin/sh\ncat > /dev/null\necho 'sbatch: error: Batch job submission "
                      "failed: Unable to contact slurm controller (connect failure)' >&2\n"
                      "exit 1\n")  # fmt: skip
    sbatch.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "epgkit.cli", "evolve", "quickstart", "debug.gin",
                          "clusters/slurm.gin", "--run-dir", str(run)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "SLURM would not take a worker's job" in line, line
    assert "Unable to contact slurm controller" in line and not run.exists()
