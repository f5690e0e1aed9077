"""``epgkit.api``: what a notebook calls returns objects and raises, and a test-time training
records every binding, so that it can be reproduced from its output alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from epgkit import api
from epgkit.errors import ConfigError
from epgkit.run.rundir import RunDirError

QUICK = ["quickstart.gin", "debug.gin"]


def test_importing_the_api_imports_neither_torch_nor_dask():
    code = ("import sys, epgkit, epgkit.api;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'dask', 'distributed', 'gymnasium')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_evolve_returns_its_run_and_train_its_summary(tmp_path):
    lines: list[str] = []
    run = api.evolve(QUICK, run_dir=tmp_path / "run", workers=0, seed=3, echo=lines.append)
    assert run.path == tmp_path / "run" and any("on in-process" in x for x in lines)
    assert [m["epoch"] for m in run.metrics()] == [0, 1]
    assert run.best_loss == run.path / "best_loss.pt" and "Experiment.seed = 3" in run.config

    summary = api.train(run.path, runs=2, steps=64, baselines=["reinforce"], out=tmp_path / "t",
                        workers=0, echo=lines.append)  # fmt: skip
    assert summary.path == tmp_path / "t" and set(summary.methods) == {"epg", "reinforce"}
    assert len(summary.methods["epg"]["finals"]) == 2
    assert summary.data == json.loads((tmp_path / "t" / "summary.json").read_text())
    assert "P(epg > reinforce)" in summary.table()
    recorded = (tmp_path / "t" / "config.gin").read_text()
    expected = [
        "TestTime.runs = 2", "TestTime.steps = 64", "TestTime.baselines = ('reinforce',)",
        "Launch.cluster = @InProcess()", f"Launch.run_dir = '{tmp_path / 't'}'",
    ]  # fmt: skip
    assert [b for b in expected if b not in recorded] == []


def test_a_tuned_baseline_is_reproduced_from_the_training_config(tmp_path):
    tuned = ["ppo/InnerLoop.lr = 0.002", "ppo/PPOLoss.clip = 0.1"]
    first = api.train("zoo:pointgoal", tuned, runs=2, steps=128, baselines=["ppo"],
                      out=tmp_path / "a", workers=0, echo=lambda line: None)  # fmt: skip
    recorded = (tmp_path / "a" / "config.gin").read_text()
    assert "ppo/InnerLoop.lr = 0.002" in recorded and "ppo/PPOLoss.clip = 0.1" in recorded
    # The same source with the recorded bindings alone (only the output moves).
    again = api.train("zoo:pointgoal", [recorded], out=tmp_path / "b", echo=lambda line: None)
    assert again.methods["ppo"]["finals"] == first.methods["ppo"]["finals"]
    assert again.methods["epg"]["finals"] == first.methods["epg"]["finals"]


def test_mistakes_raise_instead_of_exiting(tmp_path):
    with pytest.raises(ConfigError, match="give at least one config file"):
        api.evolve([], workers=0)
    with pytest.raises(ConfigError, match="TestTime: seed must be ≥ 0, got -1"):
        api.train("zoo:pointgoal", seed=-1, out=tmp_path / "t", workers=0)
    with pytest.raises(RunDirError, match="no such run directory or loss file"):
        api.train(tmp_path / "missing", workers=0)
    with pytest.raises(ConfigError, match="unknown baseline ppo2"):
        api.train("zoo:pointgoal", baselines=["ppo2"], out=tmp_path / "t", workers=0)
    assert not (tmp_path / "t").exists()


def test_sweep_returns_its_rows_and_table(tmp_path):
    result = api.sweep(QUICK, ["OpenES.sigma=[0.02, 0.05]"], ["Experiment.epochs = 1"],
                       out=tmp_path / "s", workers=0, echo=lambda line: None)  # fmt: skip
    assert result.path == tmp_path / "s" and len(result.rows) == 2
    assert "0.02" in result.table and "0.05" in result.table
