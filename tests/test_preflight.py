"""What is refused before a run directory is created, through the real CLI: bad values, sizes
that cannot fit in memory, a config that names no env, and the user's own env, loss or module
failing; and what happens when the user's code fails only later, on the workers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from epgkit.cli import app, main
from epgkit.method.experiment import Experiment
from epgkit.run import config, preflight

ROOT = Path(__file__).resolve().parent.parent
QUICK = [str(ROOT / "gin/quickstart.gin"), str(ROOT / "gin/debug.gin")]
EXPERIMENTS = config.experiments()

USER_ENVS = '''
import math
import pathlib

import gymnasium as gym
import numpy as np


class Flaky(gym.Env):
    """A 2-D env that fails as asked: ``fail_in`` the constructor, reset or step (after
    ``after`` steps of its life), or with NaN observations; each failure is logged to ``log``."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, task_seed=0, fail_in="", after=0, log=""):
        self.fail_in, self.after, self.log, self.t = fail_in, after, log, 0
        if fail_in == "constructor":
            raise ValueError("no such robot")

    def _fail(self, err):
        if self.log:
            with open(self.log, "a") as f:
                f.write("raised\\n")
        raise err

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.fail_in == "reset":
            self._fail(RuntimeError("reset exploded\\nand a second line"))
        return np.zeros(3 if self.fail_in == "shape" else 2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.fail_in == "step" and self.t > self.after:
            self._fail(ZeroDivisionError("division by zero"))
        value = math.nan if self.fail_in == "nan" and self.t > self.after else 0.0
        size = 1 if self.fail_in == "step_shape" else 2
        return np.full(size, value, np.float32), -float(np.abs(action).sum()), False, False, {}


gym.register("Flaky-v0", entry_point=Flaky, max_episode_steps=50)
'''

USER_LOSSES = '''
import dataclasses
import math

import gin

import epgkit
from epgkit.method.losses import ReinforceLoss
from epgkit.method.policies import GaussianMLP
from epgkit.method.strategies import OpenES


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class SummedLoss(ReinforceLoss):
    """Sums over the steps itself: one value per inner loop instead of one per step."""

    def __call__(self, batch, ret):
        return super().__call__(batch, ret).sum(1)


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class NaNLoss(ReinforceLoss):
    def __call__(self, batch, ret):
        return super().__call__(batch, ret) * math.nan


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class RaisingLoss(ReinforceLoss):
    def __call__(self, batch, ret):
        raise KeyError("no column named 'advantage'")


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class MisSizedLoss(ReinforceLoss):
    """Its init_phi gives one number more than its phi_size says."""

    def init_phi(self, ctx, rng):
        return rng.normal(size=self.phi_size(ctx) + 1)


@gin.register  # gin's alone: epgkit's index of policies would offer it for every Box env
@dataclasses.dataclass(frozen=True)
class BrokenPolicy(GaussianMLP):
    def dist(self, theta, obs):
        raise RuntimeError("no distribution today")


@gin.register
@dataclasses.dataclass(frozen=True)
class HalfPolicy(GaussianMLP):
    """Its dist gives one column, not the dist_dim that the window holds."""

    def dist(self, theta, obs):
        return super().dist(theta, obs)[..., :1]


@epgkit.register("strategy")
@dataclasses.dataclass(frozen=True)
class RaisingES(OpenES):
    def ask(self, state, rng):
        raise RuntimeError("no directions today")


@epgkit.register("strategy")
@dataclasses.dataclass(frozen=True)
class NaNES(OpenES):
    """Its step makes the mean φ NaN."""

    def tell(self, state, noise, fitness):
        return dataclasses.replace(state, phi=state.phi * math.nan)


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class TypedLoss(ReinforceLoss):
    """A user's loss with a value of its own: its annotation is checked like epgkit's."""

    horizon: int = 10
'''

BROKEN_MODULE = "import math\n\nSCALE = math.sqrt(-1)\n"

CLASHING_MODULE = """
import dataclasses

import epgkit
from epgkit.method.losses import ReinforceLoss


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class PPOLoss(ReinforceLoss):
    \"\"\"A user's loss named as a built-in.\"\"\"
"""


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


def subprocess_epgkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "epgkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        timeout=600,
    )


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the user's modules, importable as in ``PYTHONPATH=. epgkit ...``."""
    (tmp_path / "userenvs.py").write_text(USER_ENVS)
    (tmp_path / "userlosses.py").write_text(USER_LOSSES)
    (tmp_path / "broken.py").write_text(BROKEN_MODULE)
    (tmp_path / "clashing.py").write_text(CLASHING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("broken", "clashing"):  # each must fail again, as in a fresh process
        sys.modules.pop(module, None)
    return tmp_path


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
        (["-b", "Experiment.fitness_curve = -0.5"], "fitness_curve must be in [0, 1], got -0.5"),
        (["-b", "GaussianMLP.hidden = (64, 0)"], "GaussianMLP: hidden sizes must be positive"),
        # Checked once the scheduler is chosen, before it is reached.
        (
            ["--scheduler", "tcp://127.0.0.1:1", "-b", "Scheduler.connect_timeout = 0.0"],
            "Scheduler: connect_timeout must be > 0 seconds",
        ),
        (["--scheduler", "localhost"], "address 'localhost' is not a scheduler's address"),
        (["-b", "Launch.worker_timeout = 0.0"], "Launch: worker_timeout must be > 0 seconds"),
        (["-b", "InnerLoop.env_kwargs = (('speed', 1, 2),)"], "InnerLoop.env_kwargs must be"),
        (
            ["-b", "InnerLoop.env_kwargs = (('goal_radus', 2.0),)"],
            "InnerLoop.env_kwargs: env 'epgkit/PointGoal-v0' takes no 'goal_radus'; it takes "
            "goal_radius, angle_low, angle_high, step_size, render_mode. Did you mean goal_radius?",
        ),
    ],
)
def test_bad_values_are_refused_before_the_run_directory_is_created(tmp_path, args, message):
    run = tmp_path / "run"
    where = [] if "--scheduler" in args else ["--workers", "0"]  # one of the two, not both
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), *where, *args)
    refused(out, 2, message, run)


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["evolve", *QUICK, "--run-dir", "{x}", "--bogus"],
            "No such option: --bogus (see 'epgkit evolve --help')",
        ),
        (["train", "--out", "{x}"], "Missing argument 'source'. (see 'epgkit train --help')"),
        (["train", "zoo:pointgoal", "--out", "{x}", "--runs", "0"], "Invalid value for '--runs'"),
        (
            ["render", "zoo:pointgoal", "--out", "{x}", "--max-steps", "0"],
            "Invalid value for '--max-steps'",
        ),
        (
            ["render", "zoo:pointgoal", "--out", "{x}", "--width", "8"],
            "Invalid value for '--width'",
        ),
        (
            ["evolve", *QUICK, "--run-dir", "{x}", "--workers", "two"],
            "Invalid value for '--workers'",
        ),
    ],
)
def test_what_the_command_line_parser_refuses_is_one_line_too(tmp_path, capsys, args, message):
    # Through the console entry point: click's own refusals reach the user there.
    x = tmp_path / "x"
    with pytest.raises(SystemExit) as exit_:
        main([a.format(x=x) for a in args])
    out = capsys.readouterr()
    refused(Done(exit_.value.code, out.out, out.err), 2, message, x)


def test_a_users_own_component_has_its_values_checked_too(user_dir):
    run = user_dir / "run"
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0",
                 "-b", "import userlosses", "-b", "InnerLoop.loss = @TypedLoss()",
                 "-b", "TypedLoss.horizon = 'ten'")  # fmt: skip
    refused(out, 2, "TypedLoss.horizon must be an integer, got 'ten'", run)


@pytest.mark.parametrize(
    "binding,part",
    [
        ("GaussianMLP.hidden = (1_000_000, 1_000_000)", "the policies' parameters and Adam state"),
        ("InnerLoop.buffer_size = 10_000_000_000", "the policies' activations over the history"),
        ("EPGLoss.hidden = 10_000_000_000", "the ES's noise and candidates"),
    ],
)
def test_sizes_that_cannot_fit_in_memory_are_refused_with_the_estimate(tmp_path, binding, part):
    run = tmp_path / "run"
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0", "-b", binding)
    refused(out, 2, "this run needs at least ", run)
    assert "B of memory, more than the " in out.stderr and "B available: " + part in out.stderr


def test_the_memory_estimate_of_a_shipped_experiment_is_far_below_a_laptop():
    config.parse(["randomhopper.gin"])
    exp = config.build(Experiment)
    dims = exp.inner.dims()
    parts = preflight.batch_bytes(exp.inner, dims, exp.batch_size, preflight.phi_size(exp.inner))
    assert 1e5 < sum(parts.values()) < 1e9


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_shipped_experiment_passes_the_checks_at_its_full_scale(name):
    config.parse([name])
    exp = config.with_policies(config.build(Experiment))
    checked = preflight.check_experiment(exp, 1)  # values, memory, env and loss on a tiny batch
    assert checked.dims.obs_dim > 0 and checked.phi_size == exp.inner.phi_size()


@pytest.mark.parametrize("given", ["base.gin", "empty"])
def test_a_config_that_names_no_env_is_refused_saying_what_to_set(tmp_path, given):
    empty = tmp_path / "empty.gin"
    empty.write_text("# nothing yet\n")
    run = tmp_path / "run"
    out = epgkit("evolve", given if given == "base.gin" else str(empty), "--run-dir", str(run),
                 "--workers", "0")  # fmt: skip
    refused(out, 2, "the config does not set InnerLoop.env_id, which every experiment must set: "
            "e.g. InnerLoop.env_id = 'epgkit/PointGoal-v0'", run)  # fmt: skip


def test_train_refuses_bad_values_before_its_output_directory(tmp_path):
    out_dir = tmp_path / "t"
    for args, message in [
        (["--seed", "-1"], "TestTime: seed must be ≥ 0, got -1"),  # --seed is TestTime.seed
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


# --- the user's code ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bindings,code,message",
    [
        (
            [
                "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                "InnerLoop.env_kwargs = (('fail_in', 'step'),)",
            ],
            1,
            "env 'userenvs:Flaky-v0' failed in step: ZeroDivisionError: division by zero "
            "(userenvs.py:",
        ),
        (
            [
                "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                "InnerLoop.env_kwargs = (('fail_in', 'reset'),)",
            ],
            1,
            "env 'userenvs:Flaky-v0' failed in reset: RuntimeError: reset exploded (userenvs.py:",
        ),
        (
            [
                "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                "InnerLoop.env_kwargs = (('fail_in', 'constructor'),)",
            ],
            1,
            "env 'userenvs:Flaky-v0' failed in its constructor: ValueError: no such robot",
        ),
        (
            [
                "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                "InnerLoop.env_kwargs = (('fail_in', 'shape'),)",
            ],
            1,
            "env 'userenvs:Flaky-v0' failed in reset: it returned an observation of shape (3,), "
            "its observation_space says (2,)",
        ),
        (
            [
                "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                "InnerLoop.env_kwargs = (('fail_in', 'step_shape'),)",
            ],
            1,
            "env 'userenvs:Flaky-v0' failed in step: it returned an observation of shape (1,), "
            "its observation_space says (2,)",
        ),
        (
            ["import userlosses", "InnerLoop.loss = @MisSizedLoss()"],
            1,
            "loss MisSizedLoss: init_phi gives a φ of size 1, phi_size says 0",
        ),
        (
            ["import userlosses", "InnerLoop.policy = @BrokenPolicy()"],
            1,
            "policy BrokenPolicy failed: RuntimeError: no distribution today (userlosses.py:",
        ),
        (
            ["import userlosses", "InnerLoop.policy = @HalfPolicy()"],
            1,
            "policy HalfPolicy: dist gives a tensor of shape (1, 1, 1) for observations "
            "(1, 1, obs_dim); its dist_dim says (1, 1, 4) (userlosses.py:",
        ),
        (
            ["import userlosses", "InnerLoop.loss = @SummedLoss()"],
            1,
            "loss SummedLoss returned a tensor of shape (1,) (userlosses.py:",
        ),
        (
            ["import userlosses", "InnerLoop.loss = @NaNLoss()"],
            1,
            "loss NaNLoss gives a non-finite loss (NaN or inf) on the first update",
        ),
        (
            ["import userlosses", "InnerLoop.loss = @RaisingLoss()"],
            1,
            "loss RaisingLoss failed in __call__: KeyError: \"no column named 'advantage'\" "
            "(userlosses.py:",
        ),
        (
            [
                "import userlosses",
                "InnerLoop.guide = @RaisingLoss()",
                "Experiment.alpha_epochs = 5",
            ],
            1,
            "guidance loss RaisingLoss failed in __call__",
        ),
        (
            ["InnerLoop.env_id = 'broken:Env-v0'"],
            2,
            "env id 'broken:Env-v0': module 'broken' raised an error when imported: "
            "ValueError: math domain error (broken.py:3)",
        ),
        (
            ["import clashing"],
            2,
            "ValueError: a loss named 'PPOLoss' is registered already "
            "(epgkit.method.losses.policy_gradient.PPOLoss); a config names components by class "
            "name alone, so give this loss another name (clashing.py:",
        ),
        (
            ["InnerLoop.loss = @UserLoss()"],
            2,
            "A component of your own is known once its module is imported: `import MODULE` in "
            "the config, or -b 'import MODULE'",
        ),
        (
            ["import broken"],
            2,
            "a module the config imports raised an error when imported: ValueError: math domain "
            "error (broken.py:3)",
        ),
    ],
)
def test_the_users_failing_code_is_named_in_one_line_and_nothing_is_written(
    user_dir, bindings, code, message
):
    run = user_dir / "run"
    flags = [x for b in bindings for x in ("-b", b)]
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0", *flags)
    refused(out, code, message, run)


def test_the_users_module_failing_at_import_is_named_by_list_too(user_dir):
    out = epgkit("list", "losses", "--import", "broken")
    refused(out, 2, "--import broken: the module raised an error when imported: ValueError: "
            "math domain error (broken.py:3)", user_dir / "nothing")  # fmt: skip


def test_train_names_a_failing_baseline_loss_before_writing(user_dir):
    out_dir = user_dir / "t"
    out = epgkit("train", "zoo:pointgoal", "--runs", "2", "--workers", "0", "--out", str(out_dir),
                 "-b", "import userlosses",
                 "-b", "Experiment.baselines = {'mine': @mine/InnerLoop()}",
                 "-b", "mine/InnerLoop.loss = @RaisingLoss()", "-b", "mine/InnerLoop.guide = None",
                 "--baseline", "mine")  # fmt: skip
    refused(out, 1, "loss RaisingLoss failed in __call__: KeyError", out_dir)


def test_a_sweep_point_whose_env_fails_stops_the_sweep_before_any_point_runs(user_dir):
    out = user_dir / "s"
    done = epgkit("sweep", *QUICK, "--out", str(out), "--workers", "0",
                  "-b", "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                  "--grid", "InnerLoop.env_kwargs=[(), (('fail_in', 'step'),)]")  # fmt: skip
    refused(done, 1, "sweep point InnerLoop.env_kwargs=fail_in_step: env 'userenvs:Flaky-v0' "
            "failed in step: ZeroDivisionError", out)  # fmt: skip


def test_an_env_failing_later_on_a_dask_worker_stops_the_run_once_without_retries(user_dir):
    # It passes the driver's check (one update of M = 32 steps), then raises at step 60 of the
    # run, in both batches of the first epoch; Dask must not retry a deterministic error.
    run, log = user_dir / "run", user_dir / "raised.log"
    out = subprocess_epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "1",
                            "-b", "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                            "-b", f"InnerLoop.env_kwargs = (('fail_in', 'step'), ('after', 60), "
                            f"('log', {str(log)!r}))", cwd=user_dir)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("epgkit: error: env 'userenvs:Flaky-v0' failed in step: "
                           "ZeroDivisionError: division by zero (userenvs.py:")  # fmt: skip
    assert last.endswith(f"continue with `epgkit evolve --resume {run}`")
    assert log.read_text().count("raised") == 2  # one per batch: no retry
    # The run stays resumable: nothing of the failed epoch was written.
    assert (run / "config.gin").is_file() and not (run / "checkpoint.pt").exists()


def test_an_env_registered_by_a_config_import_runs_on_dask_workers_too(user_dir):
    # `import userenvs` runs in the driver only; the workers get the registration with the loop.
    run = user_dir / "run"
    out = subprocess_epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "1",
                            "-b", "import userenvs", "-b", "InnerLoop.env_id = 'Flaky-v0'",
                            cwd=user_dir)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_training_that_failed_leaves_its_out_free_for_the_fixed_command(user_dir):
    run, out_dir = user_dir / "run", user_dir / "t"
    flaky = ["-b", "InnerLoop.env_id = 'userenvs:Flaky-v0'"]
    assert epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0", *flaky).returncode == 0
    train = ["train", str(run), "--runs", "1", "--workers", "0", "--out", str(out_dir)]
    # It passes the check of one update, then its env raises at step 60.
    failed = epgkit(*train, "-b", "InnerLoop.env_kwargs = (('fail_in', 'step'), ('after', 60))")
    assert failed.returncode == 1 and "failed in step" in failed.stderr, failed.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["log.txt"]
    fixed = epgkit(*train)
    assert fixed.returncode == 0, fixed.stderr
    log = (out_dir / "log.txt").read_text()
    assert "training stopped: UserCodeError" in log and log.count("\n") > 1  # kept, added to
    assert (out_dir / "summary.json").is_file()


def test_every_inner_loop_failing_stops_the_run_with_the_reason(user_dir):
    run = user_dir / "run"
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0",
                 "-b", "InnerLoop.env_id = 'userenvs:Flaky-v0'",
                 "-b", "InnerLoop.env_kwargs = (('fail_in', 'nan'), ('after', 40))")  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "every inner loop of epoch 1 failed, the first with non-finite observation or " \
        "reward at step 41" in last  # fmt: skip
    assert "epoch    1/" not in out.stdout and not (run / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "strategy,message",
    [
        ("RaisingES", "strategy RaisingES failed: RuntimeError: no directions today (userlosses"),
        ("NaNES", "strategy NaNES made its mean φ non-finite in tell, epoch 1"),
    ],
)
def test_a_failing_strategy_is_named_in_one_line_before_its_epoch_is_kept(
    user_dir, strategy, message
):
    run = user_dir / "run"
    out = epgkit("evolve", *QUICK, "--run-dir", str(run), "--workers", "0",
                 "-b", "import userlosses", "-b", f"Experiment.strategy = @{strategy}()",
                 "-b", f"{strategy}.population = 2")  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"epgkit: error: {message}"), line
    assert not (run / "checkpoint.pt").exists()  # a fixed strategy resumes from the start


def test_a_training_of_more_runs_than_memory_holds_is_refused_at_once(tmp_path):
    # It made its jobs for minutes before anything was said.
    from epgkit import api
    from epgkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"the results of 1,000,000,000 runs × 1 methods"):
        api.train("zoo:pointgoal", runs=10**9, out=tmp_path / "t", workers=0)
    assert not (tmp_path / "t").exists()
    api.train("zoo:pointgoal", runs=2, steps=64, out=tmp_path / "t", workers=0,
              echo=lambda line: None)  # fmt: skip
