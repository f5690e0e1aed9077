"""Test-time training: sources, held-out tasks shared with the baselines, outputs, plots."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from epgkit.errors import ConfigError
from epgkit.method.evolve import TASK_SEED_LIMIT
from epgkit.method.executor import Serial
from epgkit.method.inner_loop import Result
from epgkit.method.losses import DPOLoss, PPOLoss
from epgkit.method.policies import GaussianMLP
from epgkit.run import train as tt
from epgkit.run.launch import prepare, run_evolution
from epgkit.run.rundir import RunDirError, json_safe
from epgkit.run.sources import Source, load_source

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evolved") / "run"
    prepared = prepare(["quickstart.gin", "debug.gin"], [f"Launch.run_dir = '{path}'"])
    run_evolution(prepared, Serial(), echo=lambda line: None)
    return path


def test_held_out_tasks_are_disjoint_from_evolution_and_shared_by_methods(run_dir):
    source = load_source(str(run_dir))
    exp = tt.build(source)
    loops = tt.methods(exp, ["ppo"], None, None)
    results = tt.run_methods(loops, tt.test_jobs(source.phi, 3, seed=0), 2, Serial())
    seeds = {m: [(r.task_seed, r.seed) for r in rs] for m, rs in results.items()}
    assert seeds["epg"] == seeds["ppo"] and len(set(seeds["epg"])) == 3
    assert all(t >= TASK_SEED_LIMIT for t, _ in seeds["epg"])
    evolved = [json.loads(x)["task_seed"] for x in (run_dir / "inner_loops.jsonl").open()]
    assert all(t < TASK_SEED_LIMIT for t in evolved)
    assert loops["ppo"].policy == loops["epg"].policy
    assert loops["ppo"].steps == loops["epg"].steps
    assert type(loops["ppo"].loss).__name__ == "PPOLoss" and loops["ppo"].guide is None


def test_trained_policies_are_run_methods_with_the_policies_kept(run_dir):
    source = load_source(str(run_dir))
    loops = tt.methods(tt.build(source), ["ppo"], None, None)
    jobs = tt.test_jobs(source.phi, 3, seed=2)
    kept = tt.trained_policies(loops, jobs, 2)
    # The same jobs in the same batches on the same code path: the same numbers, bit for bit.
    for method, results in tt.run_methods(loops, jobs, 2, Serial()).items():
        assert [r.fitness for r in kept[method]] == [r.fitness for r in results]
        assert [r.task_seed for r in kept[method]] == [j.task_seed for j in jobs]
        assert all(r.policy is None for r in results)
        assert all(r.policy and "obs_mean" in r.policy for r in kept[method])


def test_summary_matches_the_curves_last_points_and_plots_are_written(run_dir, tmp_path):
    source = load_source(str(run_dir))
    loops = tt.methods(tt.build(source), ["ppo", "reinforce"], None, None)
    results = tt.run_methods(loops, tt.test_jobs(source.phi, 3, seed=1), 3, Serial())
    summary = tt.write_outputs(tmp_path, loops, results, {"seed": 1})
    rows = [json.loads(x) for x in (tmp_path / "curves.jsonl").read_text().splitlines()]
    for method, stats in summary["methods"].items():
        last = [r["return"] for r in rows if r["method"] == method and r.get("final")]
        assert last == stats["finals"]
        assert stats["final_mean"] == pytest.approx(np.mean(last))
        assert stats["final_median"] == pytest.approx(np.median(last))
        assert stats["final_iqr"] == pytest.approx(list(np.percentile(last, [25, 75])))
        updates = [r for r in rows if r["method"] == method and not r.get("final")]
        assert len(updates) == 3 * loops[method].steps // loops[method].update_every
    for method, stats in summary["methods"].items():
        assert 0 < stats["steps_to_reach"][method] <= loops[method].steps  # its own final mean
        assert stats["final_iqm"] == pytest.approx(stats["final_mean"])  # 3 runs: none cut
        low, high = stats["final_iqm_ci"]
        assert min(stats["finals"]) - 1e-9 <= low <= high <= max(stats["finals"]) + 1e-9
    poi = {m: stats["probability_of_improvement"] for m, stats in summary["methods"].items()}
    assert {m: set(p) for m, p in poi.items()} == {
        "epg": {"ppo", "reinforce"}, "ppo": {"reinforce"}, "reinforce": {"ppo"}}  # fmt: skip
    finals = {m: stats["finals"] for m, stats in summary["methods"].items()}
    wins = sum((x > y) + 0.5 * (x == y) for x in finals["epg"] for y in finals["ppo"])
    assert poi["epg"]["ppo"]["p"] == pytest.approx(wins / 9)
    assert poi["ppo"]["reinforce"]["p"] + poi["reinforce"]["ppo"]["p"] == pytest.approx(1)
    assert all(0 <= p["ci"][0] <= p["ci"][1] <= 1 for ps in poi.values() for p in ps.values())
    assert summary["bootstrap"]["paired_by_task"] is True
    for png in ("returns.png", "kl.png"):
        assert (tmp_path / png).stat().st_size > 5_000
    won = sum(x > y for x, y in zip(finals["epg"], finals["ppo"], strict=True))
    assert poi["epg"]["ppo"]["tasks_won"] == won and poi["epg"]["ppo"]["tasks"] == 3
    text = tt.table(summary)
    assert "epg" in text and "reinforce" in text
    assert f"P(epg > reinforce) = {poi['epg']['reinforce']['p']:.2f}" in text
    assert f"ahead on {won} of 3 tasks" in text
    # A baseline against those listed after it only: the other way round is 1 − that.
    assert "P(ppo > reinforce) = " in text and "P(reinforce > ppo)" not in text
    for b in ("ppo", "reinforce"):
        reach = summary["methods"]["epg"]["steps_to_reach"][b]
        target = summary["methods"][b]["final_mean"]
        if reach is None:
            assert f"epg never reaches {b}'s final mean ({target:.2f}) within " in text
        else:
            assert f"epg reaches {b}'s final mean ({target:.2f}) at step {reach:,} of " in text


def test_failed_runs_are_left_out_of_the_statistics_and_counted():
    def result(i: int, fitness: float) -> Result:
        failed = None if math.isfinite(fitness) else "non-finite loss"
        return Result(i, 0, 100 + i, i, fitness, [], 0, {}, failed)

    loop = SimpleNamespace(steps=64, update_every=16)
    epg = tt.summarize([result(i, f) for i, f in enumerate([*range(1, 9), -math.inf])], loop)
    ppo = tt.summarize([result(i, f) for i, f in enumerate([-math.inf, *[0.5] * 8])], loop)
    summary = tt.with_statistics({"methods": {"epg": epg, "ppo": ppo}, "runs": 9})
    epg, ppo = summary["methods"]["epg"], summary["methods"]["ppo"]
    assert epg["failures"] == 1 and epg["final_iqm"] == 4.5  # mean of 3, 4, 5, 6
    assert epg["final_iqm_ci"][0] < 4.5 < epg["final_iqm_ci"][1]
    assert epg["final_mean"] == 4.5 and summary["runs"] == 9  # what was there is kept
    improvement = epg["probability_of_improvement"]
    # A failure does not lose: both runs of a task must finish for it to count as won.
    assert improvement == {"ppo": {"p": 1.0, "ci": [1.0, 1.0], "tasks_won": 7, "tasks": 7}}
    assert ppo["probability_of_improvement"] == {}  # no other baseline
    assert tt.improvement(ppo, epg)["p"] == 0.0
    # A summary.json read back (failures as null) gives the same statistics.
    read_back = json.loads(json.dumps(json_safe({"methods": {"epg": epg, "ppo": ppo}})))
    again = tt.with_statistics(read_back)["methods"]
    for key in ("final_iqm", "final_iqm_ci", "probability_of_improvement"):
        assert again["epg"][key] == epg[key] and again["ppo"][key] == ppo[key]
    with pytest.raises(ValueError, match="same tasks"):
        tt.improvement(epg, {**ppo, "task_seeds": ppo["task_seeds"][::-1]})
    assert epg["failed_because"] == {"non-finite loss": 1}
    assert "epg: 1 of 9 runs failed and are left out (1 × non-finite loss)" in tt.table(summary)


def test_a_failed_runs_curve_ends_where_it_stopped_and_a_baseline_that_always_failed_is_said():
    # Stopped after 2 of 4 updates: its last training return was carried to the end, into
    # the mean curve, the IQR band and the steps to a baseline's final mean.
    stopped = Result(0, 0, 100, 0, -math.inf, [], 0, {}, "non-finite loss",
                     episodes=[(10, -3.0), (30, -1.0)], kl=[0.1, 0.2])  # fmt: skip
    points = tt.curve(stopped, 16, 64)
    assert [p["return"] for p in points[:2]] == [-3.0, -1.0]
    assert all(math.isnan(p["return"]) for p in points[2:4]) and points[-1]["return"] == -math.inf
    loop = SimpleNamespace(steps=64, update_every=16)
    ok = Result(0, 0, 100, 0, 1.0, [], 0, {}, None)
    methods = {"epg": tt.summarize([ok], loop), "ppo": tt.summarize([stopped], loop)}
    methods["epg"]["steps_to_reach"] = {"ppo": None}
    text = tt.table(tt.with_statistics({"methods": methods}))
    assert "ppo has no final mean to reach: every run of it failed" in text
    assert "never reaches ppo" not in text


def test_train_from_a_run_dir_and_from_a_loss_file_through_the_cli(run_dir, tmp_path):
    for source, out in ((run_dir, tmp_path / "a"), (run_dir / "loss.pt", tmp_path / "b")):
        done = subprocess.run(
            [sys.executable, "-m", "epgkit.cli", "train", str(source), "--runs", "4",
             "--baseline", "ppo", "--out", str(out), "--workers", "0"],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert set(summary["methods"]) == {"epg", "ppo"}
        assert all(len(m["finals"]) == 4 for m in summary["methods"].values())
        epg = summary["methods"]["epg"]
        assert epg["final_iqm"] == pytest.approx(np.mean(sorted(epg["finals"])[1:3]))
        low, high = epg["final_iqm_ci"]
        poi = epg["probability_of_improvement"]["ppo"]
        assert set(summary["methods"]["ppo"]["probability_of_improvement"]) == set()
        assert (out / "returns.png").is_file() and (out / "kl.png").is_file()
        assert "epg" in done.stdout and "ppo" in done.stdout
        assert f"{epg['final_iqm']:.2f} [{low:.2f}, {high:.2f}]" in done.stdout
        assert f"P(epg > ppo) = {poi['p']:.2f}, 95% CI [{poi['ci'][0]:.2f}, " in done.stdout
    again = subprocess.run(
        [sys.executable, "-m", "epgkit.cli", "train", str(run_dir), "--out", str(tmp_path / "a"),
         "--workers", "0"], capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert again.returncode == 2 and "already holds" in again.stderr


def test_a_loss_tested_on_another_env_with_the_same_spaces_keeps_its_inputs(tmp_path):
    path = tmp_path / "hopper"
    prepared = prepare(["randomhopper.gin", "debug.gin"], [f"Launch.run_dir = '{path}'"])
    run_evolution(prepared, Serial(), echo=lambda line: None)
    source = load_source(str(path))
    # DirectionalHopper gives the reward to its losses; RandomHopper's loss was evolved without.
    loops = tt.methods(tt.build(source), ["ppo"], "epgkit/DirectionalHopper-v0", None)
    assert loops["epg"].loss.use_reward is False
    tt.check_fits(loops["epg"], source)
    results = tt.run_methods(loops, tt.test_jobs(source.phi, 2, seed=0), 2, Serial())
    assert all(math.isfinite(r.fitness) for rs in results.values() for r in rs)
    assert results["epg"][0].task["direction"] in (-1, 1)


def test_another_policy_architecture_can_be_trained_with_the_loss(run_dir):
    source = load_source(str(run_dir))
    loops = tt.methods(tt.build(source, ["GaussianMLP.hidden = (32, 32, 32)"]), [], None, None)
    assert loops["epg"].policy.hidden == (32, 32, 32)
    (result,) = tt.run_methods(loops, tt.test_jobs(source.phi, 1, 0), 1, Serial())["epg"]
    assert result.failed is None


def test_dpo_is_ppos_inner_loop_with_dpos_loss_in_base_gin_and_in_older_loss_files(run_dir):
    loops = tt.methods(tt.build(load_source(str(run_dir))), ["ppo", "dpo"], None, None)
    assert loops["dpo"].loss == DPOLoss() and loops["dpo"].guide is None
    assert dataclasses.replace(loops["dpo"], loss=loops["ppo"].loss) == loops["ppo"]
    # zoo:pointgoal was recorded before DPO: its dpo is DPO in its (tuned) PPO baseline's loop.
    old = tt.build(load_source("zoo:pointgoal"), ["ppo/PPOLoss.gamma = 0.9"])
    assert "dpo" not in old.baselines
    loops = tt.methods(old, ["ppo", "dpo"], None, None)
    assert dataclasses.replace(loops["dpo"], loss=loops["ppo"].loss) == loops["ppo"]
    assert loops["dpo"].loss == DPOLoss(gamma=0.9) and loops["ppo"].loss == PPOLoss(gamma=0.9)
    with pytest.raises(tt.config.ConfigError, match="unknown baseline dpo2; known: ppo, "):
        tt.methods(old, ["dpo2"], None, None)


def test_a_baseline_with_parameters_of_its_own_is_refused_in_one_line(run_dir):
    # A baseline trains with no φ; a learned loss named as one would fail mid-run.
    exp = tt.build(load_source(str(run_dir)), [
        "Experiment.baselines = {'mine': @mine/InnerLoop()}", "mine/InnerLoop.loss = @EPGLoss()",
    ])  # fmt: skip
    with pytest.raises(tt.config.ConfigError, match=r"baseline 'mine': EPGLoss has [\d,]+ param"):
        tt.methods(exp, ["mine"], None, None)
    assert set(tt.methods(exp, [], None, None)) == {"epg"}


def test_figure_17_architectures_reach_every_method_through_the_cli(tmp_path):
    """The README's Figure 17 example, tiny: the loss trains a 2 × 128 ReLU policy and so do
    the baselines, although the loss file records theirs as ``ppo/GaussianMLP``."""
    figure_17 = ["GaussianMLP.hidden = (128, 128)", "GaussianMLP.activation = 'relu'"]
    exp = tt.build(load_source("zoo:pointgoal"), figure_17)
    loops = tt.methods(exp, ["ppo", "dpo"], None, None)
    policies = {loop.policy for loop in loops.values()}
    assert policies == {GaussianMLP(hidden=(128, 128), activation="relu")}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "epgkit.cli", "train", "zoo:pointgoal", "--runs", "2",
         "--steps", "128", "-b", figure_17[0], "-b", figure_17[1], "--baseline", "ppo",
         "--baseline", "dpo", "--out", str(out), "--workers", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    methods = json.loads((out / "summary.json").read_text())["methods"]
    assert set(methods) == {"epg", "ppo", "dpo"}
    assert all(len(m["finals"]) == 2 and m["failures"] == 0 for m in methods.values())
    assert all(math.isfinite(r) for m in methods.values() for r in m["finals"])
    assert "dpo" in done.stdout


def test_a_test_time_env_binding_reaches_the_baselines_too():
    """The loss file records ``ppo/InnerLoop.env_kwargs`` (its guide's), which an unscoped
    binding does not override: PPO trained on the stock Hopper reward while the loss trained
    on the one asked for."""
    stock = "InnerLoop.env_kwargs = (('healthy_reward', 1.0),)"
    source = load_source("zoo:randomhopper-velocity-small-lr15")
    assert "ppo/InnerLoop.env_kwargs = (('healthy_reward', 0.0),)" in source.meta[
        "operative_config"]  # fmt: skip
    loops = tt.methods(tt.build(source, [stock]), ["ppo", "dpo"], None, None)
    assert {loop.env_kwargs for loop in loops.values()} == {(("healthy_reward", 1.0),)}
    default = tt.methods(tt.build(source), ["ppo"], None, None)
    assert {loop.env_kwargs for loop in default.values()} == {(("healthy_reward", 0.0),)}


def test_a_loss_that_does_not_fit_or_a_corrupt_file_is_refused(run_dir, tmp_path):
    source = load_source(str(run_dir))
    loops = tt.methods(tt.build(source), [], "epgkit/RandomHopper-v0", None)
    with pytest.raises(RunDirError, match="cannot run on epgkit/RandomHopper-v0"):
        tt.check_fits(loops["epg"], source)  # its loss reads a goal that Hopper lacks
    loops = tt.methods(tt.build(source, ["EPGLoss.use_task_signal = False"]), [],
                       "epgkit/RandomHopper-v0", None)  # fmt: skip
    with pytest.raises(RunDirError, match="needs"):
        tt.check_fits(loops["epg"], source)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(RunDirError, match="bad.pt"):
        load_source(str(bad))
    torch.save({"phi": torch.zeros(3)}, tmp_path / "nometa.pt")
    with pytest.raises(RunDirError, match="meta"):
        load_source(str(tmp_path / "nometa.pt"))
    with pytest.raises(RunDirError, match="no such"):
        load_source(str(tmp_path / "missing"))
    early = tmp_path / "early"  # a run stopped before its first epoch ended
    early.mkdir()
    for name in ("config.gin", "meta.json"):
        (early / name).write_text((run_dir / name).read_text())
    with pytest.raises(RunDirError, match="finished no epoch yet.*evolve --resume"):
        load_source(str(early))


def test_steps_to_reach_finds_the_first_step_where_the_mean_curve_gets_there():
    def run(returns):
        points = [{"env_step": 10 * (i + 1), "return": r} for i, r in enumerate(returns)]
        return points[:-1] + [{**points[-1], "final": True}]

    runs = [run([-5.0, float("nan"), -1.0, 0.0]), run([-3.0, -2.0, -1.0, 2.0])]
    assert tt.steps_to_reach(runs, -4.0) == 10  # mean of -5 and -3
    assert tt.steps_to_reach(runs, -2.5) == 20  # the nan run is left out: -2
    assert tt.steps_to_reach(runs, 1.0) == 40
    assert tt.steps_to_reach(runs, 5.0) is None


def test_the_budgets_end_is_judged_by_the_evaluation_and_a_fall_back_is_said():
    # As `curve` writes them: the last update's training episode and the evaluation share
    # the last step; a training episode above the target does not make the evaluation reach it.
    def run(returns, final):
        points = [{"env_step": 10 * (i + 1), "return": r} for i, r in enumerate(returns)]
        return [*points, {"env_step": points[-1]["env_step"], "return": final, "final": True}]

    assert tt.steps_to_reach([run([-5.0, 0.0], -2.0)], -1.0) is None
    assert tt.steps_to_reach([run([-5.0, 0.0], -0.5)], -1.0) == 20
    methods = {
        "epg": {"final_mean": -2.0, "env_steps": 20, "steps_to_reach": {"ppo": 10},
                "probability_of_improvement": {}, "final_median": -2.0,
                "final_iqr": [-2.0, -2.0], "final_iqm": -2.0, "final_iqm_ci": [-2.0, -2.0],
                "failures": 0},
        "ppo": {"final_mean": -1.0, "env_steps": 20, "steps_to_reach": {},
                "probability_of_improvement": {}, "final_median": -1.0,
                "final_iqr": [-1.0, -1.0], "final_iqm": -1.0, "final_iqm_ci": [-1.0, -1.0],
                "failures": 0},
    }  # fmt: skip
    text = tt.table({"methods": methods})
    assert "reaches ppo's final mean (-1.00) at step 10 of 20, then ends below it (-2.00)" in text


def test_tasks_won_count_strict_wins_on_tasks_where_both_runs_finished():
    def summary(finals):
        return {"finals": finals, "task_seeds": list(range(len(finals)))}

    x = summary([3.0, 1.0, 2.0, None, -math.inf, 5.0])
    y = summary([1.0, 1.0, 4.0, 0.0, -math.inf, None])  # a tie, a loss, three without a pair
    improvement = tt.improvement(x, y)
    assert (improvement["tasks_won"], improvement["tasks"]) == (1, 3)
    assert (tt.improvement(y, x)["tasks_won"], tt.improvement(y, x)["tasks"]) == (1, 3)


def test_a_loss_whose_users_module_is_not_importable_here_names_the_file_it_was_evolved_with():
    # From another folder the recorded `import my_losses` failed as if the user had typed it.
    source = load_source("zoo:pointgoal")
    meta = {
        **source.meta,
        "operative_config": "import epgkit_no_such_module_here\n" + source.meta["operative_config"],
        "user_modules": {
            "epgkit_no_such_module_here": {"file": "/lab/epgkit_no_such_module_here.py"}
        },
    }
    with pytest.raises(ConfigError, match="evolved with /lab/epgkit_no_such_module_here.py: run "):
        tt.build(Source(source.phi, meta, source.path))
