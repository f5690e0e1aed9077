"""The benchmark scripts run with tiny settings and end with their ratio line (no timing)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from epgkit.errors import ConfigError
from epgkit.method.evolve import TASK_SEED_LIMIT
from epgkit.run import train as tt
from epgkit.run.sources import load_source

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"(\d+\.\d+|nan)"


def run(script: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_inner_loop_benchmark_prints_its_rates_and_ratios():
    lines = run("inner_loop.py")
    assert lines[0].startswith("settings: K=2")
    assert any(line.startswith("gymnasium Hopper-v5, random actions: ") for line in lines)
    assert any("epgkit inner loop, K=2 lockstep, alpha=0.5" in line for line in lines)
    assert re.fullmatch(
        rf"inner_loop_vs_gymnasium_random={NUMBER} inner_loop_vs_sb3_ppo={NUMBER}", lines[-1]
    )


@pytest.mark.slow  # two Dask clusters and three timed epochs: tens of seconds
@pytest.mark.filterwarnings("ignore")
def test_es_scaling_benchmark_prints_speedup_and_memory():
    lines = run("es_scaling.py")
    assert lines[0].startswith("settings: epgkit/RandomHopper-v0")
    assert lines[1].startswith("1 worker: epoch ") and lines[2].startswith("2 workers: epoch ")
    assert re.fullmatch(rf"speedup_2_workers={NUMBER} worker_peak_rss_mb=\d+", lines[-1])


def test_ppo_reference_benchmark_compares_epgkit_ppo_with_sb3():
    lines = run("ppo_reference.py")
    assert lines[0].startswith("Hopper-v5, 2,048 env steps per run")
    assert any(line.startswith("epgkit PPO, sb3-like") for line in lines)
    assert re.fullmatch(rf"best_epgkit_ppo={NUMBER} sb3_ppo={NUMBER}", lines[-1])


def test_scale_benchmark_prints_parallel_efficiency_at_64_128_and_256_workers():
    lines = run("scale.py")
    assert lines[0].startswith("settings: W=256, durations of gin/randomhopper_small.gin")
    assert re.fullmatch(rf"default K=8 on 256 workers: parallel_efficiency={NUMBER}", lines[-2])
    assert re.fullmatch(
        rf"parallel_efficiency_64={NUMBER} parallel_efficiency_128={NUMBER} "
        rf"parallel_efficiency_256={NUMBER}",
        lines[-1],
    )


def load_tune_ppo():
    spec = importlib.util.spec_from_file_location("tune_ppo", ROOT / "benchmarks" / "tune_ppo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tune_ppo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tune_ppo_takes_an_experiment_an_env_id_or_an_evolved_loss():
    tune_ppo = load_tune_ppo()
    hopper = tune_ppo.setting("randomhopper_small", ["InnerLoop.steps = 512"])
    assert (hopper.env_id, hopper.steps, hopper.update_every) == ("epgkit/RandomHopper-v0", 512, 64)
    walker = tune_ppo.setting("epgkit/RandomWalker-v0")
    assert walker.env_id == "epgkit/RandomWalker-v0" and walker.steps == 8192  # base.gin's U
    zoo_hopper = tune_ppo.setting("zoo:randomhopper-small")
    assert dict(zoo_hopper.env_kwargs) == {"healthy_reward": 1.0}  # the reward it was tested on
    with pytest.raises(ConfigError, match="RandomWalker-v0"):
        tune_ppo.setting("epgkit/RandomWalkr-v0")


def test_tune_ppo_refuses_tuning_on_the_test_tasks():
    tune_ppo = load_tune_ppo()
    tuning = {j.task_seed for j in tune_ppo.tuning_jobs(20, seed=1, test_seed=0)}
    assert min(tuning) >= TASK_SEED_LIMIT  # held out from evolution's task seeds
    with pytest.raises(SystemExit, match="--seed 1 by convention"):
        tune_ppo.tuning_jobs(20, seed=0, test_seed=0)


def test_tune_ppo_confirms_on_tasks_of_its_own():
    tune_ppo = load_tune_ppo()
    tuning = tune_ppo.tuning_jobs(20, seed=1, test_seed=0)
    confirm = tune_ppo.confirmation_jobs(20, 3, tuning, test_seed=0)
    assert not {j.task_seed for j in confirm} & {j.task_seed for j in tuning}
    with pytest.raises(SystemExit, match="--confirm-seed 1 draws tuning tasks"):
        tune_ppo.confirmation_jobs(20, 1, tuning, test_seed=0)


def run_tune_ppo(grid: list[str], table, fragment) -> None:
    """tune_ppo.py on PointGoal at a tiny budget, as a user runs it."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tune_ppo.py"), "epgkit/PointGoal-v0",
         "--steps", "64", "--runs", "2", *grid, "--workers", "0", "--out", str(table),
         "--gin-out", str(fragment)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_tune_ppo_picks_the_best_confirmed_setting(tmp_path):
    table, fragment = tmp_path / "tuning.md", tmp_path / "baselines.gin"
    grid = ["--lrs", "0.001", "0.01", "--rollouts", "32", "--passes", "1", "2", "--confirm", "2",
            "--confirm-runs", "2", "--full-batch-only"]  # fmt: skip
    run_tune_ppo(grid, table, fragment)
    lines = [line for line in table.read_text().splitlines() if re.match(r"\| [\d.]+ \|", line)]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert len(rows) == 2 * 2 and all(len(r) == 10 for r in rows)  # lr × passes, 2 more columns
    confirmed, rest = rows[:2], rows[2:]
    assert all(r[8] for r in confirmed) and not any(r[8] for r in rest)
    assert float(confirmed[0][8]) >= float(confirmed[1][8])  # ranked by confirmation
    # The two confirmed were the two best on the tuning tasks.
    assert min(float(r[6]) for r in confirmed) >= max(float(r[6]) for r in rest)
    lr, passes = float(confirmed[0][2]), int(confirmed[0][5])
    assert f"ppo/InnerLoop.lr = {lr!r}" in fragment.read_text()
    assert re.search(rf"ppo/InnerLoop.passes = {passes}\b", fragment.read_text())
    header = " ".join(line.lstrip("# ") for line in fragment.read_text().splitlines())
    assert "on the confirmation tasks mean" in header


def test_tune_ppo_writes_a_table_and_a_fragment_that_train_uses(tmp_path):
    table, fragment = tmp_path / "tuning.md", tmp_path / "baselines.gin"
    grid = ["--lrs", "0.001", "0.01", "--rollouts", "32", "--minibatches", "16", "--passes",
            "1", "2", "--gammas", "0.9", "0.99", "--lams", "0.95"]  # fmt: skip
    run_tune_ppo(grid, table, fragment)
    rows = [line for line in table.read_text().splitlines() if re.match(r"\| [\d.]+ \|", line)]
    assert len(rows) == 2 * 2 * 2 * 2  # γ × lr × passes × minibatch {16, the full 32}
    gamma, lam, lr, rollout, minibatch, passes, mean, _ = (
        float(x) for x in rows[0].strip("|").split("|"))  # fmt: skip
    assert mean == max(float(r.strip("|").split("|")[6]) for r in rows)

    # `epgkit train LOSS -b "include '...'" --baseline ppo` trains PPO with the best setting.
    source = load_source("zoo:pointgoal-quickstart")
    exp = tt.build(source, [f"include '{fragment}'"])
    ppo = tt.methods(exp, ["ppo"], None, 64)["ppo"]
    assert (ppo.lr, ppo.update_every, ppo.minibatch, ppo.passes) == (
        lr, rollout, minibatch, passes)  # fmt: skip
    assert (ppo.loss.gamma, ppo.loss.lam, ppo.guide) == (gamma, lam, None)
    assert ppo.env_id == exp.inner.env_id == "epgkit/PointGoal-v0"
