"""The command line end to end, through real subprocesses, as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from epgkit.run import config
from epgkit.run.rundir import load_loss

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = [c for c in config.experiments() if c != "base.gin"]


def epgkit(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epgkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def snapshot(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_evolve_quickstart_with_debug_through_the_cli(tmp_path):
    run = tmp_path / "run"
    out = epgkit("evolve", "gin/quickstart.gin", "gin/debug.gin", "--run-dir", str(run),
                 "--workers", "0", "--seed", "7")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("epoch ") == 2 and "fitness" in out.stdout
    for name in ("config.gin", "operative_config.gin", "meta.json", "metrics.jsonl",
                 "inner_loops.jsonl", "checkpoint.pt", "best_loss.pt", "loss.pt",
                 "plots/fitness.png"):  # fmt: skip
        assert (run / name).is_file(), name
    config_gin = (run / "config.gin").read_text()
    assert "Experiment.seed = 7" in config_gin and "Launch.cluster = @InProcess()" in config_gin
    meta = json.loads((run / "meta.json").read_text())
    assert {"argv", "versions", "git_sha"} <= set(meta) and "torch" in meta["versions"]


def test_without_run_dir_a_fresh_timestamped_folder_is_made(tmp_path):
    out = epgkit("evolve", str(ROOT / "gin/quickstart.gin"), str(ROOT / "gin/debug.gin"),
                 "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run,) = (tmp_path / "runs" / "quickstart").iterdir()
    assert (run / "metrics.jsonl").is_file()
    assert f"Launch.run_dir = 'runs/quickstart/{run.name}'" in (run / "config.gin").read_text()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_with_debug_appended(tmp_path, name):
    out = epgkit("evolve", f"gin/{name}", "gin/debug.gin", "--run-dir", str(tmp_path / "r"),
                 "--workers", "0")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_evolve_on_a_local_dask_cluster_of_two_workers(tmp_path):
    out = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(tmp_path / "r"),
                 "--workers", "2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 workers" in out.stdout and "distributed" not in out.stderr


def test_resume_continues_a_run_from_its_directory(tmp_path):
    run = tmp_path / "r"
    first = epgkit("evolve", "gin/quickstart.gin", "gin/debug.gin", "--run-dir", str(run),
                   "--workers", "0", "-b", "Experiment.epochs = 1")  # fmt: skip
    assert first.returncode == 0, first.stderr
    # Extend the run: a resumed run reads its own config.gin, where we raise the epochs.
    text = (
        (run / "config.gin").read_text().replace("Experiment.epochs = 1", "Experiment.epochs = 2")
    )
    (run / "config.gin").write_text(text)
    again = epgkit("evolve", "--resume", str(run))
    assert again.returncode == 0, again.stderr
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] \
        == [0, 1]  # fmt: skip


def test_init_loss_starts_the_es_at_that_phi_and_a_resume_no_longer_needs_it(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    args = ("gin/quickstart.gin", "gin/debug.gin", "--workers", "0")
    out = epgkit("evolve", *args, "--run-dir", str(first), "--seed", "7")
    assert out.returncode == 0, out.stderr
    out = epgkit("evolve", *args, "--run-dir", str(second), "--init-loss", str(first),
                 "-b", "Experiment.epochs = 1", "-b", "Experiment.alpha_epochs = 0")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Experiment.init_loss = " in (second / "config.gin").read_text()
    start, _ = load_loss(first / "best_loss.pt")
    # Unguided, epoch 0's mean φ is where the ES started: the best loss after one epoch.
    phi, meta = load_loss(second / "best_loss.pt")
    np.testing.assert_array_equal(phi, start)
    assert meta["epoch"] == 0 and meta["init_loss"]["path"] == str(first / "best_loss.pt")
    shutil.rmtree(first)  # read once, at the start: the checkpoint carries the run on
    again = epgkit("evolve", "--resume", str(second), "-b", "Experiment.epochs = 2")
    assert again.returncode == 0, again.stderr
    refused = epgkit("evolve", "--resume", str(second), "--init-loss", "zoo:pointgoal")
    assert refused.returncode == 2 and "cannot change Experiment.init_loss" in refused.stderr


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    out = epgkit("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"epgkit {version('epgkit')}"
    # `python -m epgkit` is the same command, for jobs that only know their interpreter
    module = subprocess.run([sys.executable, "-m", "epgkit", "--version"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert module.returncode == 0 and module.stdout == out.stdout


def test_help_names_the_extra_to_install_in_full():
    # Rich reads "[dashboard]" as markup unless it is escaped, and prints "epgkit".
    out = epgkit("evolve", "--help", env={"COLUMNS": "300"})
    assert out.returncode == 0, out.stderr
    assert "pip install 'epgkit[dashboard]'" in out.stdout


def test_list_shows_every_kind():
    out = epgkit("list")
    assert out.returncode == 0
    names = ["EPGLoss", "PPOLoss", "ReinforceLoss", "GaussianMLP", "CategoricalMLP", "OpenES",
             "LocalCluster", "Scheduler", "InProcess"]  # fmt: skip
    for name in [*names, "epgkit/RandomHopper-v0", "epgkit/PointGoal-v0", "quickstart.gin"]:
        assert name in out.stdout
    losses = epgkit("list", "losses")
    assert "EPGLoss" in losses.stdout and "GaussianMLP" not in losses.stdout


USER_LOSS = '''
import dataclasses

import epgkit
from epgkit.method.losses import ReinforceLoss


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class MyLoss(ReinforceLoss):
    """A user's loss."""
'''


def test_train_takes_its_tasks_from_bindings_as_from_flags(tmp_path):
    # As `epgkit train SOURCE -b "$(cat OUT/config.gin)"` does: flags left out do not override.
    common = ("train", "zoo:pointgoal", "--workers", "0", "-b", "TestTime.steps = 64")
    flags = epgkit(*common, "--runs", "2", "--seed", "3", "--out", str(tmp_path / "flags"))
    bound = epgkit(*common, "-b", "TestTime.runs = 2", "-b", "TestTime.seed = 3",
                   "--out", str(tmp_path / "bound"))  # fmt: skip
    assert flags.returncode == bound.returncode == 0, flags.stderr + bound.stderr
    seeds = [json.loads((tmp_path / d / "summary.json").read_text())["methods"]["epg"]["task_seeds"]
             for d in ("flags", "bound")]  # fmt: skip
    assert seeds[0] == seeds[1] and len(seeds[0]) == 2


def test_list_imports_a_users_module_to_show_what_it_registers(tmp_path):
    (tmp_path / "my_losses.py").write_text(USER_LOSS)
    env = {"PYTHONPATH": str(tmp_path)}
    out = epgkit("list", "losses", "--import", "my_losses", env=env)
    assert out.returncode == 0 and "MyLoss" in out.stdout and "A user's loss." in out.stdout
    missing = epgkit("list", "losses", "--import", "no_such_module", env=env)
    assert missing.returncode == 2 and "no_such_module" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "my_envs.py").write_text(
        "import gymnasium as gym\n"
        "from gymnasium.envs.classic_control import PendulumEnv\n"
        "class Swing(PendulumEnv): pass\n"
        "gym.register('Swing-v0', entry_point=Swing)\n"
    )
    envs = epgkit("list", "envs", "--import", "my_envs", env=env).stdout.splitlines()
    assert any(line.split() == ["Swing-v0", "my_envs:Swing"] for line in envs), envs
    assert "Pendulum-v1" not in " ".join(envs)  # gymnasium's own envs are not listed


@pytest.mark.parametrize(
    "args,message",
    [
        (["evolve", "gin/nope.gin"], "not found"),
        (["evolve", "quickstart", "-b", "OpenEs.sigma = 0.1"], "Did you mean OpenES"),
        (["evolve", "quickstart", "-b", "OpenES.sigmaa = 0.1"], "Did you mean sigma"),
        (["evolve", "quickstart", "-b", "InnerLoop.env_id = 'epgkit/PointGol-v0'"], "PointGoal"),
        (["evolve", "quickstart", "--workers", "-1"], "workers"),
        (["evolve", "quickstart", "-b", "InnerLoop.update_every = 128"], "buffer_size"),
        (["evolve", "quickstart", "-b", "InnerLoop.minibatch = 64"], "minibatch"),
        (["evolve", "quickstart", "-b", "OpenES.sigma = 0.0"], "sigma"),
        (["evolve", "--resume", "/nonexistent/run"], "/nonexistent/run: no such directory"),
        (["train", "zoo:pointgoal", "--out", ""], "run_dir is empty"),
        (["evolve", "docs/img/pointgoal_fitness.png"], "is not a gin text file"),
        (
            ["evolve", "docs/results/directionalhalfcheetah_small/run"],
            "is a directory that holds a run: continue it",
        ),
        (["evolve", "quickstart", "--workers", "2", "--scheduler", "tcp://x:1"], "give one"),
        (
            ["evolve", "quickstart", "--init-loss", "zoo:randomhopper-velocity-small"],
            "(EPGLoss, 17,349 parameters) does not fit this run's loss",
        ),
        (["evolve", "quickstart", "--init-loss", "/nonexistent/loss.pt"], "no such run directory"),
        (["evolve", "quickstart", "--init-loss", "zoo:pointgol"], "Did you mean pointgoal"),
        (["evolve"], "at least one config"),
        (["list", "gizmos"], "cannot list"),
        (
            ["evolve", "quickstart", "-b", "InnerLoop.env_id = 'mymod:Foo-v0'"],
            "env id 'mymod:Foo-v0': module 'mymod' cannot be imported",
        ),
        (["evolve", "quickstart", "-b", "InnerLoop.eval_max_steps = 0"], "eval_max_steps"),
        (["evolve", "quickstart", "-b", "InnerLoop.loss = @EPGLos()"], "Known losses:"),
        (["envs", "show", "epgkit/RandomHopr-v0"], "Close registered ids: epgkit/RandomHopper-v0"),
        (["envs", "show", "nothing-like-it"], "epgkit's task families: "),
        (["envs", "show", "epgkit/PointGoal-v0", "--seed", "-1"], "'--seed'"),
        (["render", "zoo:pointgoal", "--seed", "-1"], "'--seed'"),
        (["render", "zoo:pointgoal", "--out", "/tmp/policy.txt"], "give one of .gif, .webp"),
        (["envs", "show", "epgkit/PointGoal-v0", "--out", "/tmp/e.txt"], "give one of .avif"),
        (["analyze", "kl", "zoo:pointgoal", "--seed", "-1"], "'--seed'"),
    ],
)
def test_user_mistakes_get_one_message_and_exit_code_2(tmp_path, args, message):
    out = epgkit(*args, "--run-dir", str(tmp_path / "r")) if args[0] == "evolve" and \
        "--resume" not in args else epgkit(*args)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_an_env_module_that_cannot_be_imported_is_named_and_nothing_is_written(tmp_path):
    out = epgkit("evolve", str(ROOT / "gin/quickstart.gin"), str(ROOT / "gin/debug.gin"),
                 "-b", 'InnerLoop.env_id = "mymod:Foo-v0"', cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "'mymod:Foo-v0'" in out.stderr and "module 'mymod' cannot be imported" in out.stderr
    assert "Traceback" not in out.stderr and list(tmp_path.iterdir()) == []


def test_an_existing_run_directory_is_refused_and_left_untouched(tmp_path):
    run = tmp_path / "r"
    first = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(run), "--workers", "0")
    assert first.returncode == 0, first.stderr
    before = snapshot(run)
    again = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(run), "--workers", "0")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "name, message",
    [("notes.txt", "is not empty (notes.txt)"), ("sweep.json", "holds a sweep")],
)
def test_a_new_run_is_refused_a_folder_holding_anything_but_a_runs_leftovers(
    tmp_path, name, message
):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / name).write_text("{}")
    (folder / "log.txt").write_text("a sweep's log\n")
    before = snapshot(folder)
    out = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(folder))
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and snapshot(folder) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "r"
    out = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(run), "--workers", "0")
    assert out.returncode == 0, out.stderr
    return run


def test_resuming_a_finished_run_says_so_and_writes_nothing(finished_run):
    before = snapshot(finished_run)
    out = epgkit("evolve", "--resume", str(finished_run), "--workers", "0")
    assert out.returncode == 0, out.stderr
    assert "has done all its 2 epochs; nothing to do" in out.stdout
    assert snapshot(finished_run) == before  # no file changed, none added (no lock left)


def test_a_training_writes_only_into_a_new_or_empty_folder(tmp_path, finished_run):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    before = snapshot(finished_run), snapshot(used)
    for out_dir, message in [(finished_run, "holds an evolution's run"),
                             (used, "is not empty (notes.txt)")]:  # fmt: skip
        out = epgkit("train", str(finished_run), "--runs", "1", "--workers", "0", "--out",
                     str(out_dir))  # fmt: skip
        assert out.returncode == 2 and message in out.stderr, out.stderr
    assert (snapshot(finished_run), snapshot(used)) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    out = epgkit("train", str(finished_run), "--runs", "1", "--workers", "0", "--out", str(empty))
    assert out.returncode == 0 and (empty / "summary.json").is_file(), out.stderr
    again = epgkit("train", str(finished_run), "--runs", "1", "--workers", "0", "--out", str(empty))
    assert again.returncode == 2 and "already holds a test-time training" in again.stderr


def test_a_training_stopped_before_its_summary_leaves_a_folder_the_same_command_reuses(
    tmp_path, finished_run
):
    # A training writes config.gin just before its summary; stopped between the two, its
    # folder was called an evolution's run and refused.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "log.txt").write_text("2026-12-03 INFO epgkit: test-time training\n")
    (stopped / "config.gin").write_text("TestTime.runs = 1\n")
    out = epgkit("train", str(finished_run), "--runs", "1", "--workers", "0", "--out",
                 str(stopped))  # fmt: skip
    assert out.returncode == 0 and (stopped / "summary.json").is_file(), out.stderr
    evolution = tmp_path / "evolution"  # an evolution's leftovers are still refused
    evolution.mkdir()
    for name in ("config.gin", "meta.json"):
        (evolution / name).write_text((finished_run / name).read_text())
    out = epgkit("train", str(finished_run), "--runs", "1", "--workers", "0", "--out",
                 str(evolution))  # fmt: skip
    assert out.returncode == 2 and "holds an evolution's run" in out.stderr, out.stderr


def test_only_an_evolutions_run_directory_resumes(tmp_path, finished_run):
    training = tmp_path / "t"
    out = epgkit("train", str(finished_run), "--runs", "1", "--workers", "0", "--out",
                 str(training))  # fmt: skip
    assert out.returncode == 0, out.stderr
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy(ROOT / "gin/quickstart.gin", copied / "config.gin")
    sweep = tmp_path / "sweep"  # was "a run stopped before it wrote its config"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    (sweep / "log.txt").write_text("")
    for folder, message in [(training, "a test-time training's output, not an evolution"),
                            (copied, "not an epgkit run directory"),
                            (sweep, "a sweep's directory: re-run the sweep's own")]:  # fmt: skip
        before = snapshot(folder)
        out = epgkit("evolve", "--resume", str(folder), "--workers", "0")
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert snapshot(folder) == before
    into = epgkit("evolve", "quickstart", "--run-dir", str(training), "--workers", "0")
    assert into.returncode == 2 and "holds a test-time training's output" in into.stderr


def test_debug_flag_shows_the_traceback():
    out = epgkit("evolve", "gin/nope.gin", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_envs_show_prints_each_task_and_writes_a_png_or_says_why_not(tmp_path):
    png = tmp_path / "tasks.png"
    out = epgkit("envs", "show", "epgkit/RandomHopper-v0", "--tasks", "3", "--out", str(png))
    assert out.returncode == 0, out.stderr
    tasks = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert len(tasks) == 3 and len({t["gravity_z"] for t in tasks}) == 3
    last = out.stdout.strip().splitlines()[-1]
    assert (last == f"wrote {png}" and png.stat().st_size > 10_000) or "GL" in last


def test_envs_show_without_gl_still_prints_the_tasks(tmp_path):
    png = tmp_path / "tasks.png"
    out = epgkit("envs", "show", "epgkit/RandomHopper-v0", "--tasks", "2", "--out", str(png),
                 env={"MUJOCO_GL": "disable"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sum(x.startswith("{") for x in out.stdout.splitlines()) == 2
    assert not png.exists() and len(out.stdout.strip().splitlines()[-1]) < 300


@pytest.mark.parametrize("backend", ["osmesa", "nonsense"])
def test_envs_show_with_a_gl_backend_that_fails_to_load_still_prints_the_tasks(tmp_path, backend):
    # MuJoCo loads the backend when it is imported: without OSMesa that import itself fails.
    png = tmp_path / "tasks.png"
    out = epgkit("envs", "show", "epgkit/RandomHopper-v0", "--tasks", "2", "--out", str(png),
                 env={"MUJOCO_GL": backend})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert sum(x.startswith("{") for x in out.stdout.splitlines()) == 2
    last = out.stdout.strip().splitlines()[-1]
    if last != f"wrote {png}":  # a machine with OSMesa renders
        assert f"MUJOCO_GL={backend!r}" in last and len(last) < 300 and not png.exists()


def test_evolve_and_train_run_on_dask_workers_when_the_gl_backend_cannot_load(tmp_path):
    # They never render: a MUJOCO_GL that breaks `import mujoco` must not stop them.
    gl = {"MUJOCO_GL": "nonsense"}
    run = tmp_path / "run"
    hopper = "InnerLoop.env_id = 'epgkit/RandomHopper-v0'"
    out = epgkit("evolve", "gin/quickstart.gin", "gin/debug.gin", "--run-dir", str(run),
                 "--workers", "1", "-b", hopper, env=gl)  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "MUJOCO_GL='nonsense' cannot be loaded" in out.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    trained = epgkit("train", str(run), "--runs", "2", "--workers", "0",
                     "--out", str(tmp_path / "t"), env=gl)  # fmt: skip
    assert trained.returncode == 0 and "Traceback" not in trained.stderr, trained.stderr


@pytest.mark.parametrize("env_id", ["Hopper-v5", "CartPole-v1"])
def test_envs_show_an_env_that_is_not_a_task_family(tmp_path, env_id):
    png = tmp_path / "resets.png"
    out = epgkit("envs", "show", env_id, "--tasks", "2", "--out", str(png))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[:2] == ["{}", "{}"] and "is not a task family" in lines[2]
    # Without GL (Hopper) or pygame (CartPole) it says why in one line instead.
    assert (lines[-1] == f"wrote {png}" and png.is_file()) or (
        lines[-1].startswith("no PNG: ") and not png.exists()
    )
    assert "Traceback" not in out.stderr


USER_ENVS = """
import gymnasium as gym
import numpy as np


class Plain(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


gym.register("Plain-v0", entry_point=Plain)
"""


def test_envs_show_a_users_env_that_neither_takes_a_task_seed_nor_renders(tmp_path):
    (tmp_path / "userenvs.py").write_text(USER_ENVS)
    png = tmp_path / "plain.png"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    out = epgkit("envs", "show", "userenvs:Plain-v0", "--tasks", "3", "--out", str(png),
                 env={"PYTHONPATH": path})  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[:3] == ["{}"] * 3 and "not a task family" in lines[3]
    assert "cannot render rgb_array frames" in lines[-1] and not png.exists()


def _metrics_run(path: Path, broken: str | None = None, torn: str = "") -> Path:
    """A run directory holding only metrics.jsonl: three epochs, line 2 replaced by ``broken``."""
    rows = [json.dumps({"epoch": e, "fitness_mean": -10.0 + e, "fitness_std": 1.0,
                        "fitness_max": -8.0 + e}) for e in range(3)]  # fmt: skip
    if broken is not None:
        rows[1] = broken
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(f"{r}\n" for r in rows) + torn)
    return path


def test_plot_skips_a_torn_last_line_and_leaves_the_run_untouched(tmp_path):
    # A crash while appending an epoch leaves its line without the newline.
    run = _metrics_run(tmp_path / "run", torn='{"epoch": 3, "fitness_mean": -6.')
    before = snapshot(run)
    out = epgkit("plot", str(run), "--out", str(tmp_path / "fitness.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fitness.png").stat().st_size > 5_000 and snapshot(run) == before


@pytest.mark.parametrize("broken", ['{"epoch": 1, "fitn', "[1, 2]", '{"fitness_mean": 1.0}'])
def test_plot_names_the_file_and_line_of_a_damaged_line(tmp_path, broken):
    run = _metrics_run(tmp_path / "run", broken=broken)
    before = snapshot(run)
    out = epgkit("plot", str(run))  # by default the plot would go into run/plots/
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{run / 'metrics.jsonl'}, line 2: " in out.stderr and "Traceback" not in out.stderr
    assert snapshot(run) == before


def test_plot_compares_runs_and_refuses_non_runs(tmp_path):
    runs = []
    for seed in ("1", "2"):
        run = tmp_path / f"r{seed}"
        done = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(run),
                      "--workers", "0", "--seed", seed)  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs.append(str(run))
    out = epgkit("plot", *runs, "--out", str(tmp_path / "both.png"))
    assert out.returncode == 0 and (tmp_path / "both.png").stat().st_size > 5_000
    bad = epgkit("plot", str(tmp_path))
    assert bad.returncode == 2 and "not an epgkit run directory" in bad.stderr
    text = epgkit("plot", *runs, "--out", str(tmp_path / "both.txt"))
    assert text.returncode == 2 and "give one of" in text.stderr and "Traceback" not in text.stderr
    assert not (tmp_path / "both.txt").exists()


def test_sweep_through_the_cli_resumes_and_refuses_another_grid(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", "gin/quickstart.gin", "gin/debug.gin", "--out", str(out), "--workers", "0"]
    first = epgkit(*args, "--grid", "OpenES.sigma=[0.01, 0.02]")
    assert first.returncode == 0, first.stderr
    assert "| OpenES.sigma |" in first.stdout and (out / "summary.md").is_file()
    assert (out / "OpenES.sigma=0.01" / "log.txt").is_file()
    again = epgkit(*args, "--grid", "OpenES.sigma=[0.01, 0.02]")
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    other = epgkit(*args, "--grid", "OpenES.sigma=[0.05]")
    assert other.returncode == 2 and "holds a different sweep" in other.stderr


@pytest.mark.parametrize(
    "grid,message",
    [
        ("OpenES.sigma=[0.1", "not a list of Python literals"),
        ("OpenES.sigmaa=[0.1]", "Did you mean sigma"),
    ],
)
def test_sweep_mistakes_get_one_message_and_exit_code_2(tmp_path, grid, message):
    out = epgkit("sweep", "quickstart", "--grid", grid, "--out", str(tmp_path / "s"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()


def test_evolve_with_wandb_writes_an_offline_run_and_its_resume_logs_on(tmp_path):
    run = tmp_path / "r"
    offline = {"WANDB_MODE": "offline"}
    # --wandb-project alone turns logging on; the project is a binding recorded with the run.
    out = epgkit("evolve", "quickstart", "gin/debug.gin", "--run-dir", str(run), "--workers", "0",
                 "--wandb-project", "epgkit-test", env=offline)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (first,) = (run / "wandb").glob("offline-run-*")
    assert (first / "files" / "config.gin").is_file() and (run / "log.txt").is_file()
    assert "Launch.wandb = 'epgkit-test'" in (run / "config.gin").read_text()
    epochs = len((run / "metrics.jsonl").read_text().splitlines())
    out = epgkit("evolve", "--resume", str(run), "-b", f"Experiment.epochs = {epochs + 1}",
                 "--workers", "0", env=offline)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2


def test_render_trains_with_a_loss_and_writes_a_gif(tmp_path):
    gif = tmp_path / "policy.gif"
    out = epgkit("render", "zoo:pointgoal", "--out", str(gif))
    assert out.returncode == 0, out.stderr
    assert "final return" in out.stdout and out.stdout.strip().endswith(f"wrote {gif}")
    # PointGoal reports no x_position: the episode is described without a distance.
    assert re.search(r"rendered episode return -?\d+\.\d\d over \d+ steps \(", out.stdout)
    assert "x moved" not in out.stdout
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames >= 2  # identical frames merge: the point moves, then stays
        full = image.size
    small = tmp_path / "small.gif"
    assert epgkit("render", "zoo:pointgoal", "--out", str(small), "--width", "100").returncode == 0
    with Image.open(small) as image:
        assert image.size == (100, round(full[1] * 100 / full[0])) and full[0] != 100


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("hopper") / "run"
    done = epgkit("evolve", "randomhopper", "gin/debug.gin", "--run-dir", str(run),
                  "--workers", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run


def test_render_says_how_the_episode_ended_and_how_far_the_body_moved(tmp_path, hopper_run):
    out = epgkit("render", str(hopper_run), "--out", str(tmp_path / "h.gif"), "--max-steps", "3")
    assert out.returncode == 0, out.stderr
    # Three steps are too few for a debug-trained hopper to fall: the GIF's limit ended it.
    found = re.search(r"over (\d+) steps \((\w+)\), x moved ([+-]\d+\.\d\d)", out.stdout)
    assert found, out.stdout
    assert found[1] == "3" and found[2] == "max_steps"
    assert abs(float(found[3])) < 0.5  # three steps of 8 ms: the hopper has barely moved


def test_the_rendered_episode_is_measured_from_where_the_body_started(hopper_run, tmp_path):
    import epgkit.run.train as tt
    from epgkit.run.sources import load_source
    from epgkit.tools.render import mean_action, render_episode

    source = load_source(str(hopper_run))
    inner = tt.methods(tt.build(source), [], None, None)[tt.LEARNED]
    (job,) = tt.test_jobs(source.phi, 1, 0)
    (result,) = inner.run([job], keep_policy=True)
    # The numbers do not need frames: without GL here the episode runs all the same.
    episode = render_episode(inner, result.policy, job.task_seed, tmp_path / "h.gif", 1000)
    env, act = inner.make_env(job.task_seed), mean_action(inner, result.policy)
    obs, _ = env.reset(seed=job.task_seed % 2**31)
    x0, steps, done = float(env.unwrapped.data.qpos[0]), 0, False
    while not done and steps < 1000:
        obs, _, terminated, truncated, _ = env.step(act(obs))
        steps, done = steps + 1, terminated or truncated
    assert episode.steps == steps and episode.ended == (
        "terminated" if terminated else "truncated" if truncated else "max_steps"
    )
    assert episode.x_moved == pytest.approx(float(env.unwrapped.data.qpos[0]) - x0)
    env.close()


@pytest.mark.parametrize("backend", ["disable", "osmesa"])
def test_render_without_gl_says_why_in_one_line_before_training(tmp_path, hopper_run, backend):
    gif = tmp_path / "h.gif"
    out = epgkit("render", str(hopper_run), "--out", str(gif), "--max-steps", "20",
                 env={"MUJOCO_GL": backend})  # fmt: skip
    assert "Traceback" not in out.stderr
    if backend == "osmesa" and out.returncode == 0:  # a machine with OSMesa renders
        assert out.stdout.strip().endswith(f"wrote {gif}") and gif.is_file()
        return
    # Exit 1, not 2: the command is right, this machine cannot render.
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"epgkit: error: no frames: cannot render with MUJOCO_GL={backend!r}")
    assert "trained on" not in out.stdout and not gif.exists()


# Views write their figures anywhere but into another command's directory: a run's files (and
# its plots/) have one writer, and a training's output is complete as it stands.
INTO_A_RUN = {
    "render into the run": ("render", "zoo:pointgoal", "--out", "{d}/policy.gif"),
    "render over its fitness plot": ("render", "zoo:pointgoal", "--out", "{d}/plots/fitness.png"),
    "analyze into the run": ("analyze", "kl", "zoo:pointgoal", "--runs", "1", "--out", "{d}"),
    "plot into its plots": ("plot", "{d}", "--out", "{d}/plots/other.png"),
    "envs show into the run": ("envs", "show", "epgkit/PointGoal-v0", "--out", "{d}/tasks.png"),
}


@pytest.mark.parametrize("owner", ["evolution", "training"])
@pytest.mark.parametrize("args", INTO_A_RUN.values(), ids=INTO_A_RUN.keys())
def test_views_refuse_to_write_into_a_run_or_a_training(tmp_path, hopper_run, owner, args):
    run = Path(shutil.copytree(hopper_run, tmp_path / "run"))
    if owner == "training":  # what a finished `epgkit train` leaves besides its figures
        (run / "checkpoint.pt").unlink()
        (run / "meta.json").unlink()
        (run / "summary.json").write_text("{}")
    before = snapshot(run)
    out = epgkit(*(a.format(d=run) for a in args))
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "choose a place outside it" in line and "Traceback" not in line, line
    assert snapshot(run) == before


def test_views_refuse_to_write_into_a_sweeps_directory(tmp_path, hopper_run):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    (sweep / "fitness.png").write_bytes(b"the sweep's own figure")
    before = snapshot(sweep)
    for args in [
        ("plot", str(hopper_run), "--out", f"{sweep}/fitness.png"),
        ("envs", "show", "epgkit/PointGoal-v0", "--out", f"{sweep}/tasks.png"),
    ]:
        out = epgkit(*args)
        assert out.returncode == 2 and "holds a run, a sweep" in out.stderr, out.stderr
    assert snapshot(sweep) == before


def test_plot_redraws_a_runs_own_figure_only_while_no_one_evolves_it(tmp_path, hopper_run):
    from epgkit.run.lock import DirLock

    run = Path(shutil.copytree(hopper_run, tmp_path / "run"))
    before = snapshot(run)
    # As a running `epgkit evolve` holds it (reading the lock file here would drop the lock:
    # POSIX record locks go with any descriptor of the file the process closes).
    with DirLock(run):
        busy = epgkit("plot", str(run))
    assert busy.returncode == 2 and "is in use by PID" in busy.stderr, busy.stderr
    assert snapshot(run) == before
    (run / "plots" / "fitness.png").unlink()
    done = epgkit("plot", str(run))
    assert done.returncode == 0, done.stderr
    assert (run / "plots" / "fitness.png").stat().st_size > 5_000 and not (run / "lock").exists()
    twice = epgkit("plot", str(run), f"{run}/", "--out", str(tmp_path / "two.png"))
    assert twice.returncode == 2 and "given twice" in twice.stderr


@pytest.fixture
def sigint_restored():
    """main() ignores Ctrl-C once stopping; this process (and the commands the later tests
    start, which inherit an ignored SIGINT) must get it back."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("interrupted", [True, False])
def test_ctrl_c_while_a_module_initializes_is_one_line_and_exit_130(
    monkeypatch, capsys, interrupted, sigint_restored
):
    import epgkit.cli as cli

    def app(*args, **kwargs):  # what torch's import gives when Ctrl-C lands in its C init
        try:
            raise KeyboardInterrupt if interrupted else ValueError("a bug")
        except (KeyboardInterrupt, ValueError):
            raise ImportError("initialization failed")  # noqa: B904 (as the C init raises it)

    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(cli, "_given_twice", lambda argv: None)  # it reads the real app
    if not interrupted:  # any other error is left to surface, traceback and all
        with pytest.raises(ImportError):
            cli.main(["list"])
        return
    with pytest.raises(SystemExit) as stop:
        cli.main(["list"])
    assert stop.value.code == 130 and capsys.readouterr().err == "epgkit: interrupted\n"


@pytest.mark.parametrize("code", [130, 0])
def test_once_stopped_by_ctrl_c_more_ctrl_c_do_not_break_the_exits_clean_up(
    monkeypatch, sigint_restored, code
):
    # A second Ctrl-C interrupted Dask's closing of its cluster at exit, with a traceback.
    import epgkit.cli as cli

    monkeypatch.setattr(cli, "app", lambda *args, **kwargs: code)  # typer's 130: a Ctrl-C
    monkeypatch.setattr(cli, "_given_twice", lambda argv: None)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(SystemExit):
        cli.main(["list"])
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert ignored == (code == 130)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["evolve", "--resume", "runs/a", "--resume", "runs/b"], "--resume"),
        (["evolve", "quickstart", "--seed=1", "--seed", "2"], "--seed"),
        (["train", "zoo:pointgoal", "--out", "a", "--runs", "2", "--out", "b"], "--out"),
        (["analyze", "kl", "zoo:pointgoal", "--runs", "1", "--runs", "2"], "--runs"),
    ],
)
def test_an_option_given_twice_is_refused_not_the_last_kept(argv, option, capsys, tmp_path,
                                                             monkeypatch):  # fmt: skip
    import epgkit.cli as cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"epgkit: error: {option} is given twice; give it once\n"
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_options_that_take_several_values_may_be_repeated():
    from epgkit.cli import _given_twice

    argv = ["train", "zoo:pointgoal", "--baseline", "ppo", "--baseline", "dpo", "-b", "A = 1",
            "--binding", "B = 2"]  # fmt: skip
    assert _given_twice(argv) is None
    assert _given_twice(["evolve", "quickstart", "--dashboard", "--dashboard"]) is None
