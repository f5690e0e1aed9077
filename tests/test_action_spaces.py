"""Stock gymnasium envs through the real CLI: the policy follows the action space, a policy
that cannot act in the env or a space epgkit cannot handle is one line and exit code 2.

The CLI runs in this process (typer's runner) to keep each env to a few seconds; one mistake
also goes through a child process, as a user runs it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from epgkit.cli import app
from epgkit.method.policies import CategoricalMLP
from epgkit.run import train as tt
from epgkit.run.rundir import RunDir, load_loss
from epgkit.run.sources import load_source

ROOT = Path(__file__).resolve().parent.parent
TINY = ["quickstart", "debug", "--workers", "0"]  # two epochs of 4 inner loops of 128 steps
STOCK = {  # env id → the policy it gets
    "CartPole-v1": "CategoricalMLP",
    "Acrobot-v1": "CategoricalMLP",
    "Pendulum-v1": "GaussianMLP",
    "MountainCarContinuous-v0": "GaussianMLP",
    "InvertedPendulum-v5": "GaussianMLP",  # float64 observations
}


def epgkit(*args: str):
    return CliRunner().invoke(app, list(args))


def env(env_id: str) -> list[str]:
    return ["-b", f"InnerLoop.env_id = {env_id!r}"]


@pytest.mark.parametrize("env_id", list(STOCK))
def test_a_stock_env_evolves_and_trains_out_of_the_box(tmp_path, env_id):
    run, policy = tmp_path / "run", STOCK[env_id]
    evolved = epgkit("evolve", *TINY, *env(env_id), "--run-dir", str(run))
    assert evolved.exit_code == 0, evolved.output
    assert f"on {env_id} with {policy}(hidden=(64, 64)" in evolved.stdout
    metrics = RunDir(run).metrics()
    assert [m["epoch"] for m in metrics] == [0, 1]  # guided by PPO (α = 1), then not
    assert all(math.isfinite(m["fitness_mean"]) and m["failures"] == 0 for m in metrics)
    assert load_loss(run / "loss.pt")[1]["policy"].startswith(f"{policy}(")

    trained = epgkit("train", str(run), "--runs", "2", "--baseline", "ppo",
                     "--out", str(tmp_path / "test"), "--workers", "0")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert set(summary["methods"]) == {"epg", "ppo"}
    finals = [f for m in summary["methods"].values() for f in m["finals"]]
    assert len(finals) == 4 and all(math.isfinite(f) for f in finals)


def test_the_chosen_policy_is_recorded_and_rebuilt_by_train(tmp_path):
    run = tmp_path / "run"
    sized = ["-b", "CategoricalMLP.hidden = (16,)", "-b", "Experiment.epochs = 1"]
    done = epgkit("evolve", *TINY, *env("CartPole-v1"), *sized, "--run-dir", str(run))
    assert done.exit_code == 0, done.output
    assert "CategoricalMLP.hidden = (16,)" in (run / "operative_config.gin").read_text()
    exp = tt.build(load_source(str(run)))
    assert exp.inner.policy == CategoricalMLP(hidden=(16,))
    assert exp.baselines["ppo"].policy == exp.inner.policy  # like for like
    other = epgkit("train", str(run), "--env", "Pendulum-v1", "--workers", "0",
                   "--out", str(tmp_path / "t"))  # fmt: skip
    assert other.exit_code == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "CategoricalMLP() cannot act in Pendulum-v1" in other.stderr


def test_a_policy_that_cannot_act_in_the_env_is_one_line_and_exit_code_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "epgkit.cli", "evolve", *TINY, *env("CartPole-v1"),
         "-b", "InnerLoop.policy = @GaussianMLP()", "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "epgkit: error: InnerLoop.policy = @GaussianMLP() cannot act in CartPole-v1, whose "
        "action space is Discrete(2); policies for Discrete actions: CategoricalMLP (or None, "
        "to choose by the action space)\n"
    )
    assert not (tmp_path / "r").exists()


class Spaces(gym.Env):
    """An env with the observation and action spaces it is registered with."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


FLAT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
UNSUPPORTED = {
    "test/MultiDiscreteActions-v0": (FLAT, gym.spaces.MultiDiscrete([3, 2])),
    "test/TupleActions-v0": (FLAT, gym.spaces.Tuple((gym.spaces.Discrete(2),) * 2)),
    "test/DictActions-v0": (FLAT, gym.spaces.Dict({"a": gym.spaces.Discrete(2)})),
    "test/MatrixActions-v0": (FLAT, gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)),
    "test/ShiftedDiscreteActions-v0": (FLAT, gym.spaces.Discrete(3, start=1)),
    "test/ImageObservations-v0": (gym.spaces.Box(0, 255, (4, 4, 3), np.uint8), FLAT),
}
for _id, (_obs, _act) in UNSUPPORTED.items():
    gym.register(_id, entry_point=Spaces, max_episode_steps=20,
                 kwargs={"observation_space": _obs, "action_space": _act})  # fmt: skip


@pytest.mark.parametrize(
    "env_id,space",
    [
        ("test/MultiDiscreteActions-v0", "action space MultiDiscrete([3 2])"),
        ("test/TupleActions-v0", "action space Tuple(Discrete(2), Discrete(2))"),
        ("test/DictActions-v0", "action space Dict('a': Discrete(2))"),
        ("test/MatrixActions-v0", "action space Box(-1.0, 1.0, (2, 2), float32)"),
        ("test/ShiftedDiscreteActions-v0", "action space Discrete(3, start=1)"),
        ("test/ImageObservations-v0", "observation space Box(0, 255, (4, 4, 3), uint8)"),
        ("FrozenLake-v1", "observation space Discrete(16)"),
    ],
)
def test_an_unsupported_space_is_one_line_and_exit_code_2(tmp_path, env_id, space):
    done = epgkit("evolve", *TINY, *env(env_id), "--run-dir", str(tmp_path / "r"))
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(f"epgkit: error: {env_id}'s {space} is not supported: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_task_signal_asked_of_an_env_without_one_is_one_line(tmp_path):
    done = epgkit("evolve", *TINY, *env("CartPole-v1"), "-b", "EPGLoss.use_task_signal = True",
                  "--run-dir", str(tmp_path / "r"))  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "EPGLoss.use_task_signal = True, but the env has no task signal" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
