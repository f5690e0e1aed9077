"""Watching runs: log.txt, progress lines and bars, counting executors, offline wandb."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from pathlib import Path

import pytest

from epgkit.method.executor import Serial
from epgkit.run import progress as progress_module
from epgkit.run.cluster import connect
from epgkit.run.launch import prepare, run_evolution
from epgkit.run.progress import CountingExecutor, Progress, log_to
from epgkit.run.tracking import track_evolution, track_training
from epgkit.run.wandb_log import WandbOptions, gin_values

CONFIGS = ["gin/quickstart.gin", "gin/debug.gin"]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """WANDB_MODE unset (epgkit must choose offline itself); wandb's own folders in tmp."""
    monkeypatch.setenv("WANDB_MODE", "placeholder")  # so that undo removes what epgkit sets
    monkeypatch.delenv("WANDB_MODE")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def wandb_record(offline: Path, needle: bytes, timeout: float = 30.0) -> bytes:
    """The offline run's transaction log once it holds ``needle`` (or the timeout passed)."""
    (path,) = offline.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while needle not in path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)  # finish() can return before wandb's service has flushed its writes
    return path.read_bytes()


def evolve_tracked(run_dir: Path, progress: Progress, **kw) -> list[dict]:
    seen: list[dict] = []
    prepared = prepare(CONFIGS, ["Launch.cluster = @InProcess()", f"Launch.run_dir = '{run_dir}'"])
    with track_evolution(prepared, progress, on_epoch=seen.append, **kw) as tracker:
        run_evolution(prepared, tracker.wrap(Serial()), tracker.echo, tracker.epoch)
    return seen


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_log_to_writes_the_epgkit_lines_and_leaves_the_logger_as_it_was(tmp_path):
    logger = logging.getLogger("epgkit")
    before = (logger.level, logger.propagate, list(logger.handlers))
    with log_to(tmp_path) as sweep_log, log_to(tmp_path / "point") as point_log:
        logging.getLogger("epgkit.method.evolve").info("epoch 1 done")
        logging.getLogger("somebody.else").warning("not ours")
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    assert "epoch 1 done" in point_log.read_text() and "epoch 1 done" in sweep_log.read_text()
    assert "not ours" not in point_log.read_text()
    logger.info("after the run")
    assert "after the run" not in point_log.read_text()


def test_plain_progress_prints_lines_with_an_eta_but_not_for_quiet_bars(monkeypatch):
    lines: list[str] = []
    with Progress(lines.append, live=False) as progress:
        bar = progress.bar("epochs", 3)
        quiet = progress.bar("inner loops", 8, lines=False)
        quiet.update(advance=8)
        bar.update(advance=1)
        bar.update(advance=1)  # within PLAIN_EVERY of the previous line: not printed
        bar.update(advance=1)  # the last step always is
        progress.echo("a message")
    assert lines[0].startswith("  epochs: 1/3,") and "ETA" in lines[0]
    assert lines[1].startswith("  epochs: 3/3,") and lines[1].endswith("ETA 0:00:00")
    assert lines[2] == "a message" and len(lines) == 3


def test_the_eta_follows_the_pace_since_the_bar_started(monkeypatch):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    bar = Progress(live=False).bar("epochs", 10, done=4)  # a resumed run: 4 done before
    bar.done = 6
    assert bar.eta() == pytest.approx(10 / 2 * 4)


def test_rich_bars_on_a_terminal_show_counts_and_echoed_lines():
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with Progress(live=True, console=console) as progress:
        bar = progress.bar("epochs", 4)
        bar.update(advance=2)
        progress.echo("epoch    2/4  fitness -10.00")
        progress._rich.refresh()
        bar.close()
    text = out.getvalue()
    assert "epoch    2/4  fitness -10.00" in text and "2/4" in text and "ETA" in text


class Watchable:
    """An executor whose map reports each finished task, as cluster executors may."""

    def map(self, fn, items, on_done=None):
        results = []
        for i, item in reversed(list(enumerate(items))):
            results.insert(0, fn(*item))
            on_done(i)
        return results


class Opaque:
    def map(self, fn, items):
        return [fn(*item) for item in items]


@pytest.mark.parametrize("executor", [Serial(), Watchable(), Opaque()], ids=type)
def test_counting_executors_return_the_same_results_and_count_inner_loops(executor):
    progress = Progress(live=False)
    bar = progress.bar("inner loops", 0, lines=False)
    seen = []
    bar_update = bar.update

    def spy(done=None, total=None, advance=0):
        bar_update(done, total, advance)
        seen.append(bar.done)

    bar.update = spy
    batches = [("a", [1, 2]), ("b", [3]), ("c", [4, 5, 6])]
    results = CountingExecutor(executor, bar).map(lambda name, jobs: (name, sum(jobs)), batches)
    assert results == [("a", 3), ("b", 3), ("c", 15)]
    assert bar.total == 6 and bar.done == 6
    if not isinstance(executor, Opaque):
        assert len(seen) == 4  # a reset, then one step per finished task


def test_counting_on_a_local_dask_cluster():
    progress = Progress(live=False)
    bar = progress.bar("inner loops", 0, lines=False)
    with connect(1) as executor:
        results = CountingExecutor(executor, bar).map(len, [([0] * 3,), ([0] * 2,)])
    assert results == [3, 2] and bar.done == bar.total == 5


def test_gin_values_reads_wrapped_values_and_keeps_references_as_text():
    text = (
        "# Parameters for Experiment:\n"
        "Experiment.baselines = \\\n"
        "    {'ppo': @ppo/InnerLoop()}\n"
        "InnerLoop.env_id = 'epgkit/PointGoal-v0'\n"
        "EPGLoss.kernels = (8, 4)\n"
        "ppo/InnerLoop.lr = 0.0003\n"
        "OpenES.sigma = 0.05\n"
    )
    assert gin_values(text) == {
        "Experiment.baselines": "{'ppo': @ppo/InnerLoop()}",
        "InnerLoop.env_id": "epgkit/PointGoal-v0",
        "EPGLoss.kernels": (8, 4),
        "ppo/InnerLoop.lr": 0.0003,
        "OpenES.sigma": 0.05,
    }


def test_a_tracked_evolution_reports_each_epoch_once_and_logs_to_its_directory(tmp_path):
    lines: list[str] = []
    with Progress(lines.append, live=False) as progress:
        seen = evolve_tracked(tmp_path / "run", progress)
    assert seen == metrics(tmp_path / "run")
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count(" INFO epoch ") == 2 and "evolving EPGLoss" in log and "done in" in log
    assert any(x.startswith("  epochs: 2/2") for x in lines)
    assert not (tmp_path / "run" / "wandb").exists()


def test_a_resumed_evolution_reports_only_its_new_epochs(tmp_path):
    run_dir = tmp_path / "run"
    with Progress(lambda line: None, live=False) as progress:
        evolve_tracked(run_dir, progress)
        config = (run_dir / "config.gin").read_text()
        (run_dir / "config.gin").write_text(
            config.replace("Experiment.epochs = 2", "Experiment.epochs = 3")
        )
        prepared = prepare([], ["Launch.cluster = @InProcess()"], resume=str(run_dir))
        seen: list[dict] = []
        with track_evolution(prepared, progress, on_epoch=seen.append) as tracker:
            assert tracker.epochs.done == 2
            run_evolution(prepared, tracker.wrap(Serial()), tracker.echo, tracker.epoch)
    assert [m["epoch"] for m in seen] == [2]
    assert (run_dir / "log.txt").read_text().count(" INFO epoch ") == 3


def test_wandb_offline_writes_a_run_into_the_run_directory(tmp_path, offline_wandb):
    with Progress(lambda line: None, live=False) as progress:
        evolve_tracked(tmp_path / "run", progress, wandb=WandbOptions("epgkit-test"))
    assert os.environ["WANDB_MODE"] == "offline"
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    record = wandb_record(offline, b"fitness_mean")
    assert b"fitness_mean" in record and b"epgkit-test" in record
    for name in ("config.gin", "operative_config.gin", "metrics.jsonl"):
        assert (offline / "files" / name).read_bytes() == (tmp_path / "run" / name).read_bytes()
    assert list((offline / "files" / "media" / "images").rglob("*.png"))
    assert (tmp_path / "run" / "metrics.jsonl").is_file()  # our own log is always kept


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, offline_wandb):
    run_dir = tmp_path / "run"
    with Progress(lambda line: None, live=False) as progress:
        evolve_tracked(run_dir, progress, wandb=WandbOptions("epgkit-test"))
        prepared = prepare([], ["Launch.cluster = @InProcess()"], resume=str(run_dir))
        with track_evolution(prepared, progress, wandb=WandbOptions("epgkit-test")) as tracker:
            run_evolution(prepared, tracker.wrap(Serial()), tracker.echo, tracker.epoch)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    ids = {re.match(r"offline-run-\d{8}_\d{6}-([a-z0-9]+)", p.name)[1] for p in runs}
    assert len(runs) == 2 and len(ids) == 1


def test_a_failed_run_is_logged_and_wandb_is_closed(tmp_path, offline_wandb):
    prepared = prepare(CONFIGS, ["Launch.cluster = @InProcess()", f"Launch.run_dir = '{tmp_path}'"])
    with (
        pytest.raises(RuntimeError, match="worker lost"),
        Progress(lambda line: None, live=False) as progress,
        track_evolution(prepared, progress, wandb=WandbOptions("epgkit-test")),
    ):
        raise RuntimeError("worker lost")
    assert "ERROR run stopped: RuntimeError: worker lost" in (tmp_path / "log.txt").read_text()
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    assert b"epgkit-test" in wandb_record(offline, b"epgkit-test")


def test_tracked_training_counts_its_inner_loops_and_sends_its_outputs(tmp_path, offline_wandb):
    out = tmp_path / "train"
    lines: list[str] = []
    with (
        Progress(lines.append, live=False) as progress,
        track_training(out, progress, 5, WandbOptions("epgkit-test"), "OpenES.sigma = 0.05\n") as t,
    ):
        results = t.wrap(Serial()).map(lambda jobs: len(jobs), [([1, 2, 3],), ([4, 5],)])
        t.echo("trained")
        (out / "summary.json").write_text(json.dumps({"methods": {"epg": {"final_mean": 1.5}}}))
        t.summary({"methods": {"epg": {"final_mean": 1.5, "finals": [1.0, 2.0]}}})
    assert results == [3, 2] and t.bar.done == 5
    assert lines[-2].startswith("  inner loops: 5/5") and lines[-1] == "trained"
    assert "trained" in (out / "log.txt").read_text()
    (offline,) = (out / "wandb").glob("offline-run-*")
    assert (offline / "files" / "summary.json").is_file()
    record = wandb_record(offline, b"methods/epg/final_mean")
    assert b"methods/epg/final_mean" in record
