"""What is refused before a run directory is created, through the real CLI: bad values and a
config that names no env."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from epgkit.cli import app

ROOT = Path(__file__).resolve().parent.parent
QUICK = [str(ROOT / "gin/quickstart.gin"), str(ROOT / "gin/debug.gin")]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def epgkit(*args: str) -> Done:
    """``epgkit ARGS`` through typer's runner, in this process (a subprocess would spend
    seconds importing torch for each of these refusals)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback the user would have seen
    return Done(result.exit_code, result.stdout, result.stderr)


def refused(out: Done, code: int, message: str, nothing: Path) -> None:
    """One line on stderr holding ``message``, exit ``code``, no traceback, nothing written."""
    assert out.returncode == code, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("epgkit: error: ") and message in line, line
    assert not nothing.exists()


# --- bad values -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,message",
    [
        (["--seed", "-1"], "Experiment: seed must be ≥ 0, got -1"),
        (["-b", "Experiment.seed = -1"], "seed must be ≥ 0, got -1"),
        (["-b", "Experiment.epochs = 2.5"], "Experiment.epochs must be an integer, got 2.5"),
        (["-b", "InnerLoop.steps = 128.0"], "InnerLoop.steps must be an integer, got 128.0"),
        (["-b", "Experiment.batch_size = True"], "batch_size must be an integer, got True"),
        (["-b", "OpenES.antithetic = 1"], "OpenES.antithetic must be True or False, got 1"),
        (["-b", "InnerLoop.lr = 1e999"], "InnerLoop.lr must be a finite number, got inf"),
        (["-b", "InnerLoop.lr = -1"], "lr must be positive, got -1"),
        (["-b", "InnerLoop.lr = nan"], "'nan' (the bindings, line 1) is not a value"),
        (["-b", "OpenES.lr_start = 1e999"], "OpenES.lr_start must be a finite number, got inf"),
        (["-b", "OpenES.lr_start = 0.0"], "OpenES.lr_start must be > 0"),
        (["-b", "InnerLoop.update_every = 0"], "update_every (M) and buffer_size (N) must be ≥ 1"),
        (["-b", "EPGLoss.hidden = 0"], "EPGLoss.hidden must be ≥ 1, got 0"),
        (["-b", "EPGLoss.channels = (10, 10.5)"], "EPGLoss.channels must be a tuple of 2 items"),
        (["-b", "PPOLoss.gamma = 1.5"], "PPOLoss.gamma must be in [0, 1], got 1.5"),
        (["-b", "GaussianMLP.hidden = (64, 0)"], "GaussianMLP: hidden sizes must be positive"),
        (["-b", "Experiment.connect_timeout = 0.0"], "connect_timeout must be > 0 seconds"),
        (["-b", "InnerLoop.env_kwargs = (('speed', 1, 2),)"], "InnerLoop.env_kwargs must be"),
    ],
)
def test_bad_values_are_refused_before_the_run_directory_is_created(tmp_path, args, message):
    run = tmp_path / "run"
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0", *args)
    refused(out, 2, message, run)


@pytest.mark.parametrize("config", ["base.gin", "empty"])
def test_a_config_that_names_no_env_is_refused_saying_what_to_set(tmp_path, config):
    empty = tmp_path / "empty.gin"
    empty.write_text("# nothing yet\n")
    run = tmp_path / "run"
    out = epgkit("evolve", config if config == "base.gin" else str(empty), "--run-dir", str(run),
                 "--workers", "0")  # fmt: skip
    refused(out, 2, "the config does not set InnerLoop.env_id, which every experiment must set: "
            "e.g. InnerLoop.env_id = 'epgkit/PointGoal-v0'", run)  # fmt: skip


def test_train_refuses_bad_values_before_its_output_directory(tmp_path):
    out_dir = tmp_path / "t"
    for args, message in [
        (["--seed", "-1"], "--seed must be ≥ 0, got -1"),
        (["-b", "InnerLoop.steps = 64.0"], "InnerLoop.steps must be an integer, got 64.0"),
    ]:
        out = epgkit("train", "zoo:pointgoal", "--runs", "2", "--workers", "0", "--out",
                     str(out_dir), *args)  # fmt: skip
        refused(out, 2, message, out_dir)


def test_a_sweep_checks_every_point_before_running_any(tmp_path):
    out = tmp_path / "s"
    done = epgkit("sweep", *QUICK, "--out", str(out), "--workers", "0",
                  "--grid", "InnerLoop.steps=[64, 128.0]")  # fmt: skip
    refused(done, 2, "sweep point InnerLoop.steps=128.0: InnerLoop.steps must be an integer", out)
    seed = epgkit("sweep", *QUICK, "--out", str(out), "--workers", "0",
                  "--grid", "OpenES.sigma=[0.1]", "--samples", "1", "--seed", "-3")  # fmt: skip
    refused(seed, 2, "--seed must be ≥ 0, got -3", out)
