"""Where a run happens: ``Launch`` and the clusters, the old ``Experiment`` bindings read from
recorded runs, and the committed runs and zoo losses that must keep working."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gin
import pytest

from epgkit.errors import ConfigError
from epgkit.method.executor import Serial
from epgkit.registry import index
from epgkit.run import config
from epgkit.run.cluster import Cluster, InProcess, Launch, LocalCluster, Scheduler, local_processes
from epgkit.run.launch import is_where, prepare
from epgkit.run.renamed import upgrade

ROOT = Path(__file__).resolve().parent.parent
# Committed runs that can resume: a run committed without its records (plain or .gz) cannot.
OLD_RUNS = sorted(
    run
    for run in (ROOT / "docs" / "results").glob("*/run")
    if any((run / name).is_file() for name in ("inner_loops.jsonl", "inner_loops.jsonl.gz"))
)


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Experiment.workers = 1", "LocalCluster.workers = 1"),
        ("Experiment.workers = None", "LocalCluster.workers = None"),
        ("Experiment.workers = 0", "Launch.cluster = @InProcess()"),
        ("Experiment.scheduler = None", ""),
        ("Experiment.scheduler = 'tcp://h:1'",
         "Launch.cluster = @Scheduler()\nScheduler.address = 'tcp://h:1'"),
        ("Experiment.connect_timeout = 10.0", "Scheduler.connect_timeout = 10.0"),
        ("Experiment.worker_timeout = 300.0", "Launch.worker_timeout = 300.0"),
        ("Experiment.run_dir = '/work/evidence/x'", "Launch.run_dir = '/work/evidence/x'"),
        ("Experiment.workers = 2  # here", "LocalCluster.workers = 2  # here"),
        # A scheduler took precedence over workers = 0, which then started nothing.
        ("Experiment.workers = 0\nExperiment.scheduler = 'tcp://h:1'",
         "LocalCluster.workers = 0\nLaunch.cluster = @Scheduler()\nScheduler.address = 'tcp://h:1'"),
        ("Experiment.epochs = 3\nExperiment.seed = 1",) * 2,
        ("ppo/Experiment.workersx = 1", "ppo/Experiment.workersx = 1"),
    ],
)  # fmt: skip
def test_old_where_bindings_become_launch_and_cluster_bindings(old, new):
    assert upgrade(old) == new
    assert upgrade(old + "\n") == (new + "\n" if new else "\n")


def test_an_upgraded_old_operative_config_builds_the_same_launch():
    # A run's operative_config.gin is rewritten when it resumes, so the old one is kept here.
    old = (ROOT / "tests" / "data" / "old_operative_config.gin").read_text()
    assert "Experiment.workers = 1" in old and "Experiment.scheduler = None" in old
    config.parse([], [old])
    launch = config.build(Launch)
    assert launch.where() == LocalCluster(workers=1)
    assert launch.run_dir is not None and launch.worker_timeout == 300.0


def test_the_clusters_are_registered_and_describe_where_they_run():
    assert {"LocalCluster", "Scheduler", "InProcess"} <= set(index("cluster"))
    assert LocalCluster(2).describe() == "2 workers" and LocalCluster(1).describe() == "1 worker"
    assert Scheduler("tcp://h:8786").describe() == "tcp://h:8786"
    assert InProcess().describe() == "in-process"
    for cluster in (LocalCluster(2), Scheduler("tcp://h:1"), InProcess()):
        assert isinstance(cluster, Cluster)
    assert [local_processes(c) for c in (LocalCluster(3), Scheduler("tcp://h:1"), InProcess())
            ] == [3, 0, 1]  # fmt: skip


def test_in_process_starts_an_executor_of_this_process():
    with Launch(InProcess()).start() as executor:
        assert isinstance(executor, Serial)
        assert executor.map(divmod, [(7, 2)]) == [(3, 1)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LocalCluster(0), "workers must be ≥ 1 .* @InProcess()"),
        (lambda: LocalCluster(1.5), "LocalCluster.workers must be an integer or None"),
        (lambda: Scheduler("tcp://h:1", 0.0), "connect_timeout must be > 0 seconds"),
        (lambda: Scheduler("foo"), "'foo' is not a scheduler's address.*missing port number"),
        (lambda: Scheduler("tcp://h:port"), "'tcp://h:port' is not a scheduler's address"),
        (lambda: Launch(worker_timeout=-1.0), "worker_timeout must be > 0 seconds"),
        (lambda: Launch(cluster="local"), "cluster must be a cluster"),
    ],
)
def test_bad_where_values_are_refused_in_one_sentence(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_without_a_cluster_binding_the_local_cluster_takes_its_gin_bindings():
    config.parse([], ["import epgkit.components", "LocalCluster.workers = 3"])
    assert config.build(Launch).where() == LocalCluster(3)


def test_where_bindings_are_launch_and_the_clusters_but_not_the_results():
    assert is_where("Launch.cluster") and is_where("LocalCluster.workers")
    assert is_where("Scheduler.address") and is_where("epgkit.cluster.Scheduler.connect_timeout")
    assert not is_where("Experiment.seed") and not is_where("OpenES.sigma")


def test_the_dashboard_without_bokeh_is_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("distributed")
    without_bokeh = ("import sys; sys.modules['bokeh'] = None; from epgkit.cli import main; "
                     "sys.argv[0] = 'epgkit'; main()")  # as if it were not installed  # fmt: skip
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-c", without_bokeh, "evolve", "gin/quickstart.gin", "gin/debug.gin",
         "--workers", "1", "--dashboard", "--run-dir", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        "epgkit: error: --dashboard (LocalCluster.dashboard) needs the bokeh package: "
        "pip install 'epgkit[dashboard]'"
    )
    assert not run.exists()


def test_the_dashboard_url_is_printed_once_and_serves_while_the_run_lives(tmp_path):
    pytest.importorskip("bokeh")  # the dashboard extra
    import urllib.request

    run = tmp_path / "run"
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]  # the workers' epgkit too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "epgkit.cli", "evolve", "gin/quickstart.gin", "gin/debug.gin",
         "--workers", "1", "--dashboard", "-b", "Experiment.epochs = 1000", "--run-dir", str(run)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = []
        for line in cli.stdout:  # up to the first epoch, so the run is surely alive
            lines.append(line.rstrip("\n"))
            if line.startswith("epoch "):
                break
        urls = [line.removeprefix("Dask dashboard: ") for line in lines
                if line.startswith("Dask dashboard: ")]  # fmt: skip
        assert len(urls) == 1, lines
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", urls[0]), urls
        with urllib.request.urlopen(urls[0], timeout=60) as page:
            assert page.status == 200 and b"Dask" in page.read()
    finally:
        cli.terminate()  # SIGTERM stops the run as Ctrl-C does: the cluster is closed
        rest, _ = cli.communicate(timeout=120)
    assert "Dask dashboard:" not in rest  # printed once


def test_a_dashboard_asked_of_a_config_whose_cluster_serves_none_is_refused(tmp_path):
    from epgkit.api import evolve

    run = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        evolve(["quickstart.gin", "debug.gin", "clusters/inprocess.gin"], dashboard=True,
               run_dir=run)  # fmt: skip
    assert str(err.value) == (
        "--dashboard shows the dashboard of a local Dask cluster, but this run's config runs on "
        "in-process; drop the flag, or choose --workers N"
    )
    assert not run.exists()


def test_a_dashboard_needs_a_local_cluster():
    from epgkit.api import where

    assert where(workers=2, dashboard=True)[-1] == "LocalCluster.dashboard = True"
    with pytest.raises(ConfigError, match="--dashboard shows the dashboard of a local"):
        where(workers=0, dashboard=True)
    with pytest.raises(ConfigError, match="--workers must be ≥ 0, got -1"):
        where(workers=-1)


@pytest.mark.parametrize("old", OLD_RUNS, ids=lambda p: p.parent.name)
def test_a_copy_of_a_committed_run_resumes_with_its_old_bindings(tmp_path, old):
    run = tmp_path / "run"
    shutil.copytree(old, run)
    before = snapshot(run)
    with prepare([], ["Launch.cluster = @InProcess()"], resume=str(run)) as prepared:
        assert prepared.launch.where() == InProcess()
        assert prepared.done > 0 and prepared.run.path == run
    assert snapshot(run) == before  # checked, not written
    # An edit of its config.gin is still refused, binding by binding.
    text = (run / "config.gin").read_text()
    (run / "config.gin").write_text(re.sub(r"OpenES.sigma = [\d.]+", "OpenES.sigma = 0.5", text))
    gin.clear_config()
    with pytest.raises(ConfigError, match="cannot change OpenES.sigma"):
        prepare([], [], resume=str(run))


def test_a_cluster_that_serves_a_dashboard_has_its_url_printed_first(tmp_path):
    from epgkit.run.launch import run_evolution

    class Served(Serial):
        dashboard = "http://127.0.0.1:40123/status"

    lines: list[str] = []
    with prepare(["quickstart.gin", "debug.gin"], [f"Launch.run_dir = '{tmp_path}'"]) as prepared:
        run_evolution(prepared, Served(), lines.append)
    assert lines[0] == "Dask dashboard: http://127.0.0.1:40123/status"
    assert lines[1].startswith("epgkit: evolving") and " worker" in lines[1]
