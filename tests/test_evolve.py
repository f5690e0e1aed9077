"""The outer loop: job assignment, determinism across workers, run directory, resume."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from epgkit.method.evolve import TASK_SEED_LIMIT, candidate_fitness, epoch_jobs, evolve, objective
from epgkit.method.executor import Serial
from epgkit.method.experiment import Experiment
from epgkit.method.jobs import Result
from epgkit.method.user_code import UserCodeError
from epgkit.run import config
from epgkit.run.resume import plan_repair
from epgkit.run.rundir import RunDir, load_loss

TIMING = ("wall_s",)


def experiment(*bindings: str) -> Experiment:
    config.parse(["quickstart.gin", "debug.gin"], ["Experiment.epochs = 3", *bindings])
    return config.build(Experiment)


def metrics(run: RunDir) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in run.metrics()]


def new_run(path) -> RunDir:
    run = RunDir(path)
    run.create("# test\n", [])
    return run


def test_each_worker_gets_candidate_ceil_wv_over_w_and_its_own_task():
    exp = experiment(
        "Experiment.inner_loops = 8", "OpenES.population = 4", "OpenES.antithetic = False"
    )
    jobs = epoch_jobs(exp, np.arange(4.0)[:, None], epoch=5)
    assert [j.candidate for j in jobs] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [float(j.phi[0]) for j in jobs] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len({j.task_seed for j in jobs}) == 8
    assert all(0 <= j.task_seed < TASK_SEED_LIMIT for j in jobs)
    assert [j.task_seed for j in jobs] == [
        j.task_seed for j in epoch_jobs(exp, np.arange(4.0)[:, None], epoch=5)
    ]


def test_antithetic_pairs_share_tasks_and_seeds():
    exp = experiment(
        "Experiment.inner_loops = 8", "OpenES.population = 4", "OpenES.antithetic = True"
    )
    jobs = epoch_jobs(exp, np.arange(4.0)[:, None], epoch=0)
    for j, mirror in zip(jobs[:4], jobs[4:], strict=True):
        assert (j.task_seed, j.seed) == (mirror.task_seed, mirror.seed)
        assert mirror.candidate == j.candidate + 2


def test_run_writes_metrics_records_checkpoint_and_losses(tmp_path):
    exp = experiment("Experiment.alpha_epochs = 2")
    run = new_run(tmp_path / "run")
    state = evolve(exp, run, Serial(), loss_meta={"env_id": exp.inner.env_id})
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for key in ("fitness_mean", "fitness_std", "fitness_max", "alpha", "env_steps", "wall_s"):
        assert all(key in r for r in rows)
    assert [r["alpha"] for r in rows] == [1.0, 0.5, 0.0]
    assert rows[-1]["env_steps"] > rows[0]["env_steps"] > 0
    records = [json.loads(x) for x in (run.path / "inner_loops.jsonl").read_text().splitlines()]
    assert len(records) == 3 * exp.inner_loops
    assert {"task_seed", "seed", "fitness", "candidate", "task"} <= set(records[0])
    ckpt = run.load_checkpoint()
    # Epoch 0 is guided with α = 1: fitness ignores φ, each ±v pair ties, the ES takes no step.
    assert ckpt["epoch"] == 3 and ckpt["step"] == 2
    np.testing.assert_array_equal(ckpt["phi"].numpy(), state.phi)
    phi, meta = load_loss(run.path / "loss.pt")
    np.testing.assert_allclose(phi, state.phi.astype(np.float32))
    best, best_meta = load_loss(run.path / "best_loss.pt")
    assert best.shape == phi.shape and best_meta["env_id"] == exp.inner.env_id
    # Only the unguided epoch counts: under guidance PPO shares the credit for the fitness.
    assert best_meta["epoch"] == 2 and best_meta["fitness_mean"] == rows[2]["fitness_mean"]


def result(candidate: int, final: float, episodes: list, failed: str | None = None) -> Result:
    return Result(0, candidate, 1, 2, final, [final], 300, {}, failed, episodes)


def test_the_learning_curve_weights_each_training_episode_by_its_length():
    # Episodes of 50, 50 and 150 steps: (50·−10 + 50·−20 + 150·−5) / 250 = −9.
    assert result(0, -3.0, [(50, -10.0), (100, -20.0), (250, -5.0)]).curve() == pytest.approx(-9.0)
    assert result(0, -3.0, []).curve() == -3.0  # no episode ended: the final return
    assert result(0, -math.inf, [(50, -10.0)], "non-finite loss").curve() == -math.inf


def test_the_es_objective_blends_final_return_and_curve_and_fails_at_any_weight():
    # Curves of 10 (0, then 20) and 11 (10, then 12): the late learner ends higher.
    early, late = [(100, 10.0), (200, 12.0)], [(100, 0.0), (200, 20.0)]
    ran = [result(0, 20.0, late), result(1, 12.0, early)]
    # The final return alone, or half of it, ranks the late learner first...
    np.testing.assert_allclose(candidate_fitness(ran, 2), [20.0, 12.0])
    np.testing.assert_allclose(candidate_fitness(ran, 2, 0.5), [15.0, 11.5])
    # ... the curve alone the early one.
    np.testing.assert_allclose(candidate_fitness(ran, 2, 1.0), [10.0, 11.0])
    assert objective(result(0, 5.0, [(100, 1.0)]), 0.25) == pytest.approx(0.75 * 5 + 0.25 * 1)
    failed = result(0, -math.inf, [(100, 50.0)], "non-finite loss")
    assert all(objective(failed, w) == -math.inf for w in (0.0, 0.5, 1.0))


def test_a_curve_weighted_run_logs_both_and_keeps_the_best_objective(tmp_path):
    w, setting = 0.5, ("Experiment.alpha_epochs = 0", "Experiment.inner_loops = 8",
                       "OpenES.population = 8")  # fmt: skip
    plain, curved = new_run(tmp_path / "plain"), new_run(tmp_path / "curved")
    evolve(experiment(*setting), plain, Serial())
    evolve(experiment(*setting, f"Experiment.fitness_curve = {w}"), curved, Serial())
    rows = curved.metrics()
    for r in rows:
        blend = (1 - w) * r["fitness_mean"] + w * r["curve_mean"]
        assert r["objective_mean"] == pytest.approx(blend)
    assert all("curve_mean" not in r for r in plain.metrics())
    # Epoch 0 evaluates the same φ on the same tasks either way; the ES then ranks otherwise.
    assert plain.metrics()[0]["fitness_mean"] == rows[0]["fitness_mean"]
    phis = [run.load_checkpoint()["phi"].numpy() for run in (plain, curved)]
    assert not np.array_equal(*phis)
    best = max(rows, key=lambda r: r["objective_mean"])
    _, meta = load_loss(curved.path / "best_loss.pt")
    assert meta["epoch"] == best["epoch"] and meta["objective_mean"] == best["objective_mean"]
    assert meta["fitness_mean"] == best["fitness_mean"]


def test_the_fitness_plot_adds_the_learning_curve_only_where_it_was_logged(tmp_path, monkeypatch):
    from epgkit.run import plotting

    runs = {}
    for name, bindings in (("plain", ()), ("curved", ("Experiment.fitness_curve = 0.5",))):
        runs[name] = new_run(tmp_path / name)
        evolve(experiment("Experiment.alpha_epochs = 0", *bindings), runs[name], Serial())
    labels = []
    monkeypatch.setattr(plotting, "_save", lambda fig, out: labels.extend(
        line.get_label() for line in fig.axes[0].get_lines()))  # fmt: skip
    plotting.plot_fitness([runs["plain"].path, runs["curved"].path], tmp_path / "f.png")
    assert "curved learning curve" in labels and "plain learning curve" not in labels
    assert {"plain mean", "curved mean", "plain max", "curved max"} <= set(labels)


def test_no_best_loss_while_every_epoch_is_guided(tmp_path):
    run = new_run(tmp_path / "run")
    evolve(experiment("Experiment.alpha_epochs = 10"), run, Serial())
    assert all(r["alpha"] > 0 for r in run.metrics())
    assert (run.path / "loss.pt").is_file() and not (run.path / "best_loss.pt").exists()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_another_batch_size_changes_results_only_by_rounding(tmp_path, batch_size):
    # One guided epoch (α = 1, no ES step): the same inner loops, grouped otherwise. Across K
    # only rounding may differ (the BLAS kernel), so later epochs are not compared: ranks of
    # near-tied fitnesses may flip, which is why the determinism contract fixes K.
    records = []
    for k in (4, batch_size):
        run = new_run(tmp_path / f"k{k}")
        evolve(experiment("Experiment.epochs = 1", "Experiment.inner_loops = 8",
                          f"Experiment.batch_size = {k}"), run, Serial())  # fmt: skip
        rows = [json.loads(x) for x in (run.path / "inner_loops.jsonl").read_text().splitlines()]
        records.append(sorted(rows, key=lambda r: r["index"]))
    assert len(records[0]) == len(records[1]) == 8
    for a, b in zip(*records, strict=True):
        same = ("index", "candidate", "task_seed", "seed")
        assert [a[k] for k in same] == [b[k] for k in same]
        assert b["fitness"] == pytest.approx(a["fitness"], rel=1e-4, abs=1e-6)


def test_same_seed_gives_identical_metrics_in_process_and_on_1_or_2_dask_workers(
    evolve_on_0_1_2_workers,
):
    runs = evolve_on_0_1_2_workers(experiment())
    results = [(metrics(run), run.load_checkpoint()["phi"].numpy()) for run in runs]
    for other in results[1:]:
        assert other[0] == results[0][0]
        np.testing.assert_array_equal(other[1], results[0][1])


def test_another_seed_gives_another_run(tmp_path):
    a, b = new_run(tmp_path / "a"), new_run(tmp_path / "b")
    evolve(experiment(), a, Serial())
    evolve(experiment("Experiment.seed = 1"), b, Serial())
    assert metrics(a) != metrics(b)


class CrashAfter(Serial):
    """An executor that dies in the middle of epoch ``n`` (counting from 0)."""

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n

    def map(self, fn, items):
        if self.calls == self.n:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        return super().map(fn, items)


@pytest.mark.parametrize("crash_epoch", [0, 1, 2])
def test_resume_after_a_crash_repeats_an_uninterrupted_run(tmp_path, crash_epoch):
    exp = experiment()
    whole = new_run(tmp_path / "whole")
    evolve(exp, whole, Serial())
    crashed = new_run(tmp_path / "crashed")
    with pytest.raises(KeyboardInterrupt):
        evolve(exp, crashed, CrashAfter(crash_epoch))
    assert len(crashed.metrics()) == crash_epoch
    evolve(exp, crashed, Serial())
    assert metrics(crashed) == metrics(whole)
    assert (crashed.path / "inner_loops.jsonl").read_text().count("\n") == (
        whole.path / "inner_loops.jsonl"
    ).read_text().count("\n")


def test_resume_completes_logs_lost_between_checkpoint_and_append(tmp_path):
    exp = experiment()
    run = new_run(tmp_path / "run")
    evolve(exp, run, Serial())
    expected = metrics(run)
    lines = (run.path / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run.path / "metrics.jsonl").write_text("".join(lines[:-1]))
    records = (run.path / "inner_loops.jsonl").read_text().splitlines(keepends=True)
    (run.path / "inner_loops.jsonl").write_text("".join(records[: -exp.inner_loops]))
    plan_repair(run.path, run.checkpoint()).apply()  # as the driver does before evolving
    evolve(exp, run, Serial())
    assert metrics(run) == expected
    assert (run.path / "inner_loops.jsonl").read_text().splitlines(keepends=True) == records


class BlowsUp(gym.Env):
    """A 1-D env whose physics gives a NaN observation at step 5 of the tasks ``bad`` picks."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, task_seed: int = 0, bad: str = "odd"):
        self.blows_up, self.t = bad == "all" or task_seed % 2 == 1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        value = math.nan if self.blows_up and self.t == 5 else 0.0
        return np.full(1, value, np.float32), -abs(float(action[0])), False, False, {}


gym.register("test/BlowsUp-v0", entry_point=BlowsUp, max_episode_steps=16)


def test_failed_inner_loops_are_counted_and_ranked_last(tmp_path):
    exp = experiment("InnerLoop.env_id = 'test/BlowsUp-v0'", "Experiment.inner_loops = 8")
    run = new_run(tmp_path / "run")
    evolve(exp, run, Serial())
    rows = run.metrics()
    assert all(0 < r["failures"] < exp.inner_loops for r in rows)  # the odd tasks fail
    records = [json.loads(x) for x in (run.path / "inner_loops.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["failed"]]
    assert failed and all(r["fitness"] is None for r in failed)
    assert all(r["task_seed"] % 2 for r in failed)
    assert all(math.isfinite(torch.tensor(r["fitness"]).item()) for r in records if not r["failed"])


def test_an_epoch_where_every_inner_loop_fails_stops_the_run_before_its_checkpoint(tmp_path):
    exp = experiment(
        "InnerLoop.env_id = 'test/BlowsUp-v0'", "InnerLoop.env_kwargs = (('bad', 'all'),)"
    )
    run = new_run(tmp_path / "run")
    with pytest.raises(UserCodeError, match=r"every inner loop of epoch 1 failed, the first "
                       r"with non-finite observation or reward at step 5 \(task seed"):  # fmt: skip
        evolve(exp, run, Serial())
    assert not (run.path / "checkpoint.pt").exists() and run.metrics() == []
