"""Sweeps: grids parsed and checked, every point an ordinary run, summaries that match the runs'
logs, and an interrupted sweep that resumes exactly where it stopped."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gin
import pytest

from epgkit.method.executor import Serial
from epgkit.run import config
from epgkit.run import sweep as sw
from epgkit.run import sweep_plan as sp
from epgkit.run import sweep_summary as summary
from epgkit.run.progress import Progress
from epgkit.run.rundir import RunDirError
from epgkit.run.wandb_log import gin_values

CONFIGS = ["gin/quickstart.gin", "gin/debug.gin"]
IN_PROCESS = ["Launch.cluster = @InProcess()"]


def run(tmp: Path, grids: list[str], bindings: tuple[str, ...] = (), executor=None, **kw):
    plan = sp.plan(CONFIGS, grids, bindings)
    sweep = sw.open_sweep(plan, tmp, IN_PROCESS)
    with Progress(lambda line: None, live=False) as progress:
        rows = sw.run_sweep(sweep, executor or Serial(), progress, **kw)
    return sweep, rows


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def untimed(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "wall_s"} for m in metrics(run_dir)]


def wandb_record(offline: Path, needle: bytes, timeout: float = 30.0) -> bytes:
    """The offline run's transaction log once it holds ``needle`` (or the timeout passed)."""
    (path,) = offline.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while needle not in path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)  # finish() can return before wandb's service has flushed its writes
    return path.read_bytes()


class Counting:
    """Runs in-process; counts epochs run (one ``map`` per epoch) and can crash after some."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.calls, self.crash_after = 0, crash_after

    def map(self, fn, items):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise RuntimeError("killed")
        return [fn(*item) for item in items]


# ----------------------------------------------------------------------------- grids
@pytest.mark.parametrize(
    "spec,binding,values",
    [
        ("OpenES.sigma=[0.01, 0.02]", "OpenES.sigma", (0.01, 0.02)),
        (" InnerLoop.lr = (3e-3,) ", "InnerLoop.lr", (0.003,)),
        ("InnerLoop.env_id=['epgkit/PointGoal-v0']", "InnerLoop.env_id", ("epgkit/PointGoal-v0",)),
        ("EPGLoss.kernels=[(8, 4), (4, 2)]", "EPGLoss.kernels", ((8, 4), (4, 2))),
        ("ppo/InnerLoop.lr=[1e-4]", "ppo/InnerLoop.lr", (1e-4,)),
    ],
)
def test_a_grid_is_a_binding_and_a_list_of_literals(spec, binding, values):
    assert sp.parse_axis(spec) == sp.Axis(binding, values)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("OpenES.sigma", "list of values"),
        ("sigma=[0.1]", "configurable's parameter"),
        ("OpenES.sigma=[0.1", "not a list of Python literals"),
        ("OpenES.sigma=[numpy.pi]", "not a list of Python literals"),
        ("OpenES.sigma=0.1", "non-empty list"),
        ("OpenES.sigma=[]", "non-empty list"),
        ("OpenES.sigma=[0.1, 0.1]", "repeated"),
    ],
)
def test_a_malformed_grid_is_a_config_error(spec, message):
    with pytest.raises(config.ConfigError, match=message):
        sp.parse_axis(spec)


@pytest.mark.parametrize(
    "grids,bindings,samples,message",
    [
        ([], [], None, "at least one --grid"),
        (["OpenES.sigma=[0.1]", "OpenES.sigma=[0.2]"], [], None, "given twice"),
        (["OpenES.sigma=[0.1]"], ["OpenES.sigma = 0.3"], None, "both swept"),
        (["OpenES.sigma=[0.1, 0.2]"], [], 3, "between 1 and the 2 points"),
    ],
)
def test_a_contradictory_sweep_is_refused(grids, bindings, samples, message):
    with pytest.raises(config.ConfigError, match=message):
        sp.plan(CONFIGS, grids, bindings, samples)


@pytest.mark.parametrize(
    "grid,message",
    [
        ("OpenES.sigmaa=[0.1]", "Did you mean sigma"),
        ("OpenEs.sigma=[0.1]", "Did you mean OpenES"),
        ("OpenES.sigma=[0.1, 0.0]", "sigma"),
        ("InnerLoop.env_id=['epgkit/PointGoal-v0', 'epgkit/Nope-v0']", "Nope"),  # 2nd point
    ],
)
def test_an_unknown_binding_or_bad_value_is_refused_before_anything_is_written(
    tmp_path, grid, message
):
    with pytest.raises(config.ConfigError, match=message):
        sw.open_sweep(sp.plan(CONFIGS, [grid]), tmp_path / "s", IN_PROCESS)
    assert not (tmp_path / "s").exists()


def test_a_point_whose_policy_cannot_act_in_its_env_is_refused_before_anything_is_written(
    tmp_path,
):
    plan = sp.plan(CONFIGS, ["InnerLoop.env_id=['Pendulum-v1', 'CartPole-v1']"],
                   ["InnerLoop.policy = @GaussianMLP()"])  # fmt: skip
    with pytest.raises(config.ConfigError, match=r"GaussianMLP\(\) cannot act in CartPole-v1"):
        sw.open_sweep(plan, tmp_path / "s", IN_PROCESS)
    assert not (tmp_path / "s").exists()


def test_points_are_the_product_in_grid_order_with_readable_unique_names():
    plan = sp.plan(CONFIGS, ["OpenES.sigma=[0.02, 0.05]", "InnerLoop.lr=[0.003, 0.01]"])
    points = plan.points()
    assert [p.values for p in points] == [(0.02, 0.003), (0.02, 0.01), (0.05, 0.003), (0.05, 0.01)]
    assert points[0].name == "OpenES.sigma=0.02,InnerLoop.lr=0.003"
    assert points[0].bindings == ("OpenES.sigma = 0.02", "InnerLoop.lr = 0.003")
    odd = sp.plan(CONFIGS, ["InnerLoop.env_id=['a/b', 'a_b']", "EPGLoss.kernels=[(8, 4)]"])
    names = [p.name for p in odd.points()]
    assert names == ["InnerLoop.env_id=a_b,EPGLoss.kernels=8_4~0",
                     "InnerLoop.env_id=a_b,EPGLoss.kernels=8_4~1"]  # fmt: skip


def test_samples_are_distinct_points_of_the_grid_reproducible_from_the_seed():
    grids = ["OpenES.sigma=[0.01, 0.02, 0.05, 0.1]", "InnerLoop.lr=[1e-3, 3e-3, 1e-2]"]
    full = {p.values for p in sp.plan(CONFIGS, grids).points()}
    first = sp.plan(CONFIGS, grids, samples=5, seed=3).points()
    assert len({p.values for p in first}) == 5 and {p.values for p in first} <= full
    assert sp.plan(CONFIGS, grids, samples=5, seed=3).points() == first
    assert sp.plan(CONFIGS, grids, samples=5, seed=4).points() != first


def test_the_default_directory_is_the_same_for_the_same_sweep_only():
    a = sw.default_out(sp.plan(CONFIGS, ["OpenES.sigma=[0.1, 0.2]"]))
    assert a == sw.default_out(sp.plan(["quickstart", "debug"], ["OpenES.sigma = [0.1, 0.2]"]))
    assert a != sw.default_out(sp.plan(CONFIGS, ["OpenES.sigma=[0.1, 0.3]"]))
    assert a.parent == Path("runs/quickstart") and a.name.startswith("sweep-")


# ----------------------------------------------------------------------------- running
def test_a_2x2_grid_gives_four_runs_and_a_summary_matching_their_logs(tmp_path):
    sweep, rows = run(tmp_path, ["OpenES.sigma=[0.02, 0.05]", "InnerLoop.lr=[0.003, 0.01]"])
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(dirs) == 4 and len(rows) == 4
    for point in sweep.points:
        text = (sweep.point_dir(point) / "config.gin").read_text()
        for binding in point.bindings:
            assert binding in text
        assert "Launch.cluster = @InProcess()" in text
        assert (sweep.point_dir(point) / "plots" / "fitness.png").is_file()
    with open(tmp_path / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["point"] for r in table] == [r.point.name for r in rows]
    finals = [float(r["final_objective"]) for r in table]
    assert finals == sorted(finals, reverse=True)
    for r in table:
        logged = metrics(Path(r["run_dir"]))
        assert float(r["final_fitness_mean"]) == logged[-1]["fitness_mean"]
        assert r["final_objective"] == r["final_fitness_mean"]  # no learning curve in the fitness
        unguided = [m["fitness_mean"] for m in logged if m["alpha"] == 0]
        assert r["best_objective"] == (repr(max(unguided)) if unguided else "")
        assert int(r["epochs_done"]) == len(logged) == int(r["epochs"]) == 2
        assert float(r["wall_s"]) == sum(m["wall_s"] for m in logged)
        assert float(r["OpenES.sigma"]) in (0.02, 0.05)
    md = (tmp_path / "summary.md").read_text()
    assert f"{finals[0]:.2f}" in md and "| OpenES.sigma | InnerLoop.lr |" in md
    assert (tmp_path / "fitness.png").is_file() and (tmp_path / "log.txt").is_file()
    recorded = json.loads((tmp_path / "sweep.json").read_text())
    assert recorded["grid"] == {"OpenES.sigma": ["0.02", "0.05"], "InnerLoop.lr": ["0.003", "0.01"]}


@pytest.mark.parametrize("crash_after", [2, 3], ids=["in-first-epoch", "after-one-epoch"])
def test_a_killed_sweep_resumes_without_redoing_finished_points(tmp_path, crash_after):
    grids = ["OpenES.sigma=[0.02, 0.05, 0.1]"]
    crashing = Counting(crash_after)
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "s", grids, executor=crashing)
    sweep = sw.open_sweep(sp.plan(CONFIGS, grids), tmp_path / "s", IN_PROCESS)
    first, second, third = (sweep.point_dir(p) for p in sweep.points)
    finished = {p: p.read_bytes() for p in [first / "metrics.jsonl", first / "inner_loops.jsonl"]}
    assert (second / "config.gin").is_file() and not third.exists()
    # The summary of the stopped sweep counts the epochs its points checkpointed.
    shown = {r["point"]: int(r["epochs_done"]) for r in csv.DictReader(
        (tmp_path / "s" / "summary.csv").read_text().splitlines())}  # fmt: skip
    assert shown == {first.name: 2, second.name: crash_after - 2, third.name: 0}

    again = Counting()
    run(tmp_path / "s", grids, executor=again)
    assert again.calls == 2 * 3 - crash_after  # only the epochs not done before the crash
    assert {p: p.read_bytes() for p in finished} == finished
    whole = Counting()
    run(tmp_path / "whole", grids, executor=whole)
    assert whole.calls == 6
    for point in sweep.points:
        assert untimed(tmp_path / "s" / point.name) == untimed(tmp_path / "whole" / point.name)
    rows = list(csv.DictReader((tmp_path / "s" / "summary.csv").read_text().splitlines()))
    assert [int(r["epochs_done"]) for r in rows] == [2, 2, 2]


def test_a_finished_sweep_run_again_runs_nothing(tmp_path):
    run(tmp_path, ["OpenES.sigma=[0.02]"])
    again = Counting()
    run(tmp_path, ["OpenES.sigma=[0.02]"], executor=again)
    assert again.calls == 0


def test_the_same_sweep_with_its_grids_in_another_order_runs_nothing_again(tmp_path):
    grids = ["OpenES.sigma=[0.02, 0.05]", "InnerLoop.lr=[0.001]"]
    first, _ = run(tmp_path, grids, ("Experiment.epochs = 1",))
    folders = sorted(p.name for p in tmp_path.iterdir())
    again = Counting()
    second, rows = run(tmp_path, grids[::-1], ("Experiment.epochs = 1",), executor=again)
    assert again.calls == 0  # every point found finished
    assert [q.name for q in second.points] == [q.name for q in first.points]
    assert sorted(p.name for p in tmp_path.iterdir()) == folders  # no folder added
    assert len(rows) == 2


def test_a_run_of_another_experiment_in_a_points_folder_is_refused(tmp_path):
    # Started there by hand (or while the sweep ran other points), it was resumed or ranked
    # as the point's own run.
    from epgkit import api

    grids, bindings = ["OpenES.sigma=[0.02, 0.05]"], ("Experiment.epochs = 1",)
    sweep, _ = run(tmp_path, grids, bindings)
    foreign = sweep.point_dir(sweep.points[1])
    shutil.rmtree(foreign)
    api.evolve(CONFIGS, ["OpenES.sigma = 0.05", "InnerLoop.lr = 0.01", *bindings, *IN_PROCESS],
               run_dir=foreign, echo=lambda line: None)  # fmt: skip
    with pytest.raises(RunDirError, match="holds a run of another experiment than this point"):
        run(tmp_path, grids, bindings)
    shutil.rmtree(foreign)  # the point's own run, resumed on past the sweep, is still its own
    again = Counting()
    run(tmp_path, grids, bindings, executor=again)
    api.evolve(resume=foreign, bindings=["Experiment.epochs = 2"], echo=lambda line: None)
    run(tmp_path, grids, bindings, executor=again)
    assert again.calls == 1


def test_a_point_resumed_past_the_sweep_is_finished_and_both_say_how_far_it_ran(tmp_path):
    sweep, _ = run(tmp_path, ["OpenES.sigma=[0.02]"])
    (point,) = sweep.points
    extended = subprocess.run(
        [sys.executable, "-m", "epgkit.cli", "evolve", "--resume", str(sweep.point_dir(point)),
         "--workers", "0", "-b", "Experiment.epochs = 3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert extended.returncode == 0, extended.stderr
    said: list[str] = []
    again = Counting()
    plan = sp.plan(CONFIGS, ["OpenES.sigma=[0.02]"])
    with Progress(said.append, live=False) as progress:
        (row,) = sw.run_sweep(sw.open_sweep(plan, tmp_path, IN_PROCESS), again, progress)
    assert again.calls == 0
    assert f"point 1/1 {point.name}: finished (3/2 epochs), skipped" in said
    assert (row.epochs, row.of) == (3, 2)


def test_a_different_sweep_in_the_same_directory_is_refused(tmp_path):
    sw.open_sweep(sp.plan(CONFIGS, ["OpenES.sigma=[0.02, 0.05]"]), tmp_path, IN_PROCESS)
    before = (tmp_path / "sweep.json").read_text()
    with pytest.raises(RunDirError, match="holds a different sweep .grid"):
        sw.open_sweep(sp.plan(CONFIGS, ["OpenES.sigma=[0.02, 0.1]"]), tmp_path, IN_PROCESS)
    with pytest.raises(RunDirError, match="holds a different sweep .bindings"):
        sw.open_sweep(
            sp.plan(CONFIGS, ["OpenES.sigma=[0.02, 0.05]"], ["Experiment.seed = 1"]), tmp_path
        )
    # Where the points run is not part of the sweep: another worker count resumes it.
    sw.open_sweep(
        sp.plan(CONFIGS, ["OpenES.sigma=[0.02, 0.05]"]), tmp_path, ["LocalCluster.workers = 2"]
    )
    assert (tmp_path / "sweep.json").read_text() == before


def test_a_sweep_is_its_configs_content_not_their_paths_nor_its_bindings_spaces(tmp_path):
    # Another install, or a moved checkout, holds the same config files at other paths.
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    copies = []
    for name in CONFIGS:
        copy = elsewhere / Path(name).name
        copy.write_text((config.resolve(name)).read_text())
        copies.append(str(copy))
    grid = ["OpenES.sigma=[0.02, 0.05]"]
    first = sp.plan(CONFIGS, grid, ["Experiment.seed=1"])
    second = sp.plan(copies, grid, ["Experiment.seed = 1"])
    assert first.name() == second.name()
    sw.open_sweep(first, tmp_path / "s", IN_PROCESS).close()
    sw.open_sweep(second, tmp_path / "s", IN_PROCESS).close()  # the same sweep: it resumes
    Path(copies[1]).write_text(Path(copies[1]).read_text() + "\nExperiment.epochs = 3\n")
    edited = sp.plan(copies, grid, ["Experiment.seed = 1"])
    assert edited.name() != first.name()
    with pytest.raises(RunDirError, match="holds a different sweep .configs"):
        sw.open_sweep(edited, tmp_path / "s", IN_PROCESS)


def test_a_folder_that_is_not_a_sweep_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a sweep directory"):
        sw.open_sweep(sp.plan(CONFIGS, ["OpenES.sigma=[0.02]"]), tmp_path, IN_PROCESS)


def _float_bindings() -> list[tuple[str, float]]:
    config.parse(CONFIGS)
    values = gin_values(gin.config_str())
    gin.clear_config()
    return sorted((k, v) for k, v in values.items() if isinstance(v, float))


@pytest.mark.parametrize("binding,value", _float_bindings())
def test_a_sweep_over_any_float_binding_of_the_config_works(tmp_path, binding, value):
    sweep, rows = run(tmp_path, [f"{binding}=[{value / 2!r}]"], ("Experiment.epochs = 1",))
    (row,) = rows
    assert row.epochs == 1 and row.final is not None and math.isfinite(row.final)
    assert f"{binding} = {value / 2!r}" in (tmp_path / row.point.name / "config.gin").read_text()


def test_a_sweep_of_two_sigmas_runs_both(tmp_path):
    sweep, rows = run(tmp_path, ["OpenES.sigma=[0.01, 0.02]"])
    assert sorted(r.point.values for r in rows) == [(0.01,), (0.02,)]
    sigmas = {metrics(Path(r.run_dir))[0]["sigma"] for r in rows}
    assert sigmas == {0.01, 0.02}  # the ES really used each point's σ


def test_a_sweep_over_the_curve_weight_ranks_each_point_by_what_its_es_maximized(tmp_path):
    sweep, rows = run(
        tmp_path, ["Experiment.fitness_curve=[0.0, 1.0]"], ("Experiment.alpha_epochs = 0",)
    )
    by_weight = {r.point.values[0]: r for r in rows}
    plain, curve = (metrics(Path(by_weight[w].run_dir)) for w in (0.0, 1.0))
    assert "objective_mean" not in plain[-1]
    assert by_weight[0.0].final == by_weight[0.0].final_fitness == plain[-1]["fitness_mean"]
    # At w = 1 the objective is the learning curve alone, not the final return.
    assert by_weight[1.0].final == curve[-1]["objective_mean"] == curve[-1]["curve_mean"]
    assert by_weight[1.0].final != by_weight[1.0].final_fitness == curve[-1]["fitness_mean"]
    assert by_weight[1.0].best == max(m["objective_mean"] for m in curve)
    assert [r.final for r in rows] == sorted((r.final for r in rows), reverse=True)


def test_summary_puts_points_without_a_finite_fitness_last(tmp_path):
    sweep, _ = run(tmp_path, ["OpenES.sigma=[0.02, 0.05]"])
    broken = sweep.point_dir(sweep.points[0]) / "metrics.jsonl"
    lines = [json.loads(x) for x in broken.read_text().splitlines()]
    broken.write_text("".join(json.dumps({**m, "fitness_mean": None}) + "\n" for m in lines))
    rows = summary.summarize(sweep)
    assert rows[-1].point == sweep.points[0] and rows[-1].final is None and rows[-1].best is None
    summary.write_summary(sweep, rows)
    assert "| – | – | – |" in (tmp_path / "summary.md").read_text()


def test_summary_warns_when_points_ran_different_numbers_of_epochs(tmp_path):
    sweep, rows = run(tmp_path, ["OpenES.sigma=[0.02, 0.05]"])
    assert "Points ran" not in summary.table(sweep, rows)
    stopped = sweep.point_dir(sweep.points[0]) / "metrics.jsonl"
    stopped.write_text(stopped.read_text().splitlines(keepends=True)[0])  # as if stopped early
    rows = summary.summarize(sweep)
    assert sorted(r.epochs for r in rows) == [1, 2]
    assert "Points ran 1 to 2 epochs: compare final objectives only" in summary.table(sweep, rows)


def test_wandb_offline_groups_the_points_of_a_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    out = tmp_path / "sigma-sweep"
    sweep, _ = run(out, ["OpenES.sigma=[0.02, 0.05]"], ("Launch.wandb = 'epgkit-test'",))
    for point in sweep.points:
        (offline,) = (sweep.point_dir(point) / "wandb").glob("offline-run-*")
        record = wandb_record(offline, b"fitness_mean")  # protobuf; strings appear as such
        assert b"sigma-sweep" in record and point.name.encode() in record
        assert b"fitness_mean" in record
        assert (offline / "files" / "config.gin").is_file()
