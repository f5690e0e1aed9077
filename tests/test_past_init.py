"""Initialization from past policies (Figure 12B): which inner loops start from which past θ,
what enters the pool, and the pool across workers, checkpoints and --resume."""

from __future__ import annotations

import dataclasses
import json

import gin
import numpy as np
import pytest
import torch

from epgkit.method import past_init
from epgkit.method.evolve import evolve
from epgkit.method.executor import Serial
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.method.losses import PPOLoss
from epgkit.method.past_init import PastInit, Pool
from epgkit.run import config
from epgkit.run.launch import prepare, run_evolution
from epgkit.run.rundir import RunDir

FILES = ["quickstart.gin", "extensions/past_init.gin", "debug.gin"]


def experiment(*bindings: str, files: list[str] = FILES) -> Experiment:
    config.parse(files, ["Experiment.epochs = 3", *bindings])
    return config.with_policies(config.build(Experiment))


def new_run(path) -> RunDir:
    run = RunDir(path)
    run.create("# test\n", [])
    return run


def records(run: RunDir) -> list[dict]:
    return [json.loads(x) for x in (run.path / "inner_loops.jsonl").read_text().splitlines()]


class Spy(Serial):
    """Runs in process and keeps every job it ran and every result, in order."""

    def __init__(self) -> None:
        self.jobs, self.results = [], []

    def map(self, fn, items, on_done=None):
        out = super().map(fn, items, on_done)
        for (_, jobs), results in zip(items, out, strict=True):
            self.jobs += jobs
            self.results += results
        return out


# --- one inner loop -------------------------------------------------------------------------


@pytest.fixture
def still() -> InnerLoop:
    """An inner loop whose vanishing step size leaves θ where it started."""
    return InnerLoop(env_id="epgkit/PointGoal-v0", loss=PPOLoss(), guide=None, steps=64,
                     update_every=32, buffer_size=32, eval_episodes=1, lr=1e-12)  # fmt: skip


def test_an_inner_loop_starts_from_its_theta0_and_reports_its_final_theta(still):
    empty = np.zeros(0, np.float32)
    fresh = still.run([Job(empty, 0.0, 5, 9, keep_theta=True)])[0].theta
    assert fresh is not None and fresh.dtype == np.float32 and fresh.size == still.theta_size()
    theta0 = np.random.default_rng(3).normal(size=fresh.size).astype(np.float32)
    started = still.run([Job(empty, 0.0, 5, 9, theta0=theta0, keep_theta=True)])[0].theta
    np.testing.assert_allclose(started, theta0, atol=1e-6)
    assert np.abs(fresh - theta0).max() > 0.1
    # Off unless asked: nothing else pays for carrying θ back.
    assert still.run([Job(empty, 0.0, 5, 9)])[0].theta is None


def test_theta0_wins_over_the_evolved_theta0_of_epg_i(still):
    inner = dataclasses.replace(still, evolve_init=True)
    evolved = inner.init_phi(np.random.default_rng(1))
    past = np.full(inner.theta_size(), 0.25, np.float32)
    jobs = [Job(evolved, 0.0, 5, 9, keep_theta=True),
            Job(evolved, 0.0, 5, 9, theta0=past, keep_theta=True)]  # fmt: skip
    plain, from_past = inner.run(jobs)
    np.testing.assert_allclose(plain.theta, evolved, atol=1e-6)
    np.testing.assert_allclose(from_past.theta, past, atol=1e-6)


def test_a_past_start_does_not_change_its_batch_mates(tiny_inner):
    phi = tiny_inner.init_phi(np.random.default_rng(0))
    past = np.zeros(tiny_inner.theta_size(), np.float32)
    mate = Job(phi, 0.0, 7, 11, index=0, keep_theta=True)
    a = tiny_inner.run([mate, Job(phi, 0.0, 8, 12, index=1)])
    b = tiny_inner.run([mate, Job(phi, 0.0, 8, 12, index=1, theta0=past)])
    assert a[0].fitness == b[0].fitness and np.array_equal(a[0].theta, b[0].theta)
    assert a[1].fitness != b[1].fitness


def test_a_theta0_of_another_size_is_refused(still):
    with pytest.raises(ValueError, match="Job.theta0 has 3 numbers, the policy"):
        still.run([Job(np.zeros(0, np.float32), 0.0, 5, 9, theta0=np.zeros(3, np.float32))])


# --- the plan of an epoch -------------------------------------------------------------------


def pool_of(n: int, size: int = 4) -> Pool:
    theta = np.arange(n * size, dtype=np.float32).reshape(n, size)
    return Pool(theta, np.stack([np.zeros(n, np.int64), np.arange(n)], 1))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0])
def test_every_candidate_starts_as_many_from_the_pool_and_mirrors_share_their_starts(fraction):
    shared = (0, 1, 2, 3, 0, 1, 2, 3)  # antithetic: candidate c + 4 mirrors c
    plan = past_init.plan(PastInit(fraction=fraction), 0, 4, pool_of(10), shared, 32)
    per = 32 // 8
    counts = [sum(s is not None for s in plan.starts[c * per : (c + 1) * per]) for c in range(8)]
    assert counts == [int(np.ceil(fraction * per))] * 8
    assert plan.starts[16:] == plan.starts[:16]
    assert all(s is None or 0 <= s < 10 for s in plan.starts)
    assert sum(plan.keep) == PastInit().admit
    again = past_init.plan(PastInit(fraction=fraction), 0, 4, pool_of(10), shared, 32)
    assert again == plan  # from the seed alone
    assert past_init.plan(PastInit(fraction=fraction), 0, 5, pool_of(10), shared, 32) != plan


def test_nothing_starts_from_an_empty_pool_and_admissions_do_not_depend_on_its_size():
    empty = past_init.plan(PastInit(), 0, 0, Pool.empty(4), (0, 1), 8)
    full = past_init.plan(PastInit(), 0, 0, pool_of(3), (0, 1), 8)
    assert empty.starts == (None,) * 8 and any(s is not None for s in full.starts)
    assert empty.keep == full.keep


def test_the_pool_keeps_the_newest_policies_that_did_not_fail(still):
    results = still.run([Job(np.zeros(0, np.float32), 0.0, t, t, index=t, keep_theta=t != 1)
                         for t in range(3)])  # fmt: skip
    results[2].failed = "non-finite loss"
    pool = past_init.admit(PastInit(pool_size=2), pool_of(2, results[0].theta.size), 7, results)
    assert len(pool) == 2 and pool.origin.tolist() == [[0, 1], [7, 0]]
    np.testing.assert_array_equal(pool.theta[1], results[0].theta)


BAD = [{"fraction": 0.0}, {"fraction": 1.5}, {"pool_size": 0}, {"admit": 0}, {"admit": 2.5}]


@pytest.mark.parametrize("kwargs", BAD)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="PastInit"):
        PastInit(**kwargs)


# --- the evolution --------------------------------------------------------------------------


def test_with_the_extension_later_epochs_start_from_earlier_final_policies(tmp_path):
    spy, run = Spy(), new_run(tmp_path / "run")
    exp = experiment()
    evolve(exp, run, spy)
    w = exp.inner_loops
    finals = {(e, r.index): r.theta for e in range(3) for r in spy.results[e * w : (e + 1) * w]
              if r.theta is not None}  # fmt: skip
    rows = records(run)
    started = [(row, job) for row, job in zip(rows, spy.jobs, strict=True) if row["theta0_from"]]
    assert all(row["epoch"] >= 1 for row, _ in started)
    assert {row["epoch"] for row, _ in started} == {1, 2}
    for row, job in started:
        origin = tuple(row["theta0_from"])
        assert origin[0] < row["epoch"]
        np.testing.assert_array_equal(job.theta0, finals[origin])  # a past final θ, bit for bit
    assert [m["past_starts"] for m in run.metrics()] == [0, 2, 2]  # ⌈0.5 · W/V⌉ of V = 2
    fresh = [r.fitness for row, r in zip(rows, spy.results, strict=True)
             if row["epoch"] == 2 and not row["theta0_from"]]  # fmt: skip
    assert run.metrics()[2]["fitness_fresh_mean"] == pytest.approx(np.mean(fresh))
    ckpt = run.load_checkpoint()
    assert ckpt["pool_theta"].shape == (3 * w, exp.inner.theta_size())  # admit 8 ≥ W = 4
    assert np.array_equal(ckpt["pool_theta"][-1].numpy(), finals[(2, w - 1)])


def test_without_the_extension_no_inner_loop_starts_from_a_past_policy(tmp_path):
    spy, run = Spy(), new_run(tmp_path / "run")
    evolve(experiment(files=["quickstart.gin", "debug.gin"]), run, spy)
    assert all(j.theta0 is None and not j.keep_theta for j in spy.jobs)
    assert all(r.theta is None for r in spy.results)
    assert not any("theta0_from" in row for row in records(run))
    assert not any("past_starts" in m for m in run.metrics())
    assert not {"pool_theta", "pool_origin"} & set(run.load_checkpoint())


def test_a_checkpoint_without_a_pool_still_loads_and_continues_with_an_empty_one(tmp_path):
    run = new_run(tmp_path / "run")
    evolve(experiment("Experiment.epochs = 1"), run, Serial())
    ckpt = run.load_checkpoint()
    del ckpt["pool_theta"], ckpt["pool_origin"]  # as a run started before past policies
    run.save_checkpoint(ckpt)
    evolve(experiment("Experiment.epochs = 2"), run, Serial())
    rows = [row for row in records(run) if row["epoch"] == 1]
    assert len(rows) == 4 and not any(row["theta0_from"] for row in rows)
    assert run.load_checkpoint()["pool_origin"][:, 0].tolist() == [1] * 4


def test_a_pool_of_another_policy_size_is_refused():
    ckpt = past_init.save(pool_of(2, size=5))
    with pytest.raises(ValueError, match="the policy has 4 numbers"):
        past_init.load(ckpt, 4)


def evolution(run_dir, epochs: int, resume: bool = False) -> dict:
    """A tiny quickstart evolution under past_init.gin through ``epgkit evolve``'s launcher (in
    process); returns its checkpoint."""
    if resume:
        prepared = prepare([], [f"Experiment.epochs = {epochs}"], resume=str(run_dir))
    else:
        prepared = prepare(FILES, [f"Experiment.epochs = {epochs}",
                                   f"Experiment.run_dir = '{run_dir}'"])  # fmt: skip
    run_evolution(prepared, Serial(), echo=lambda line: None)
    return RunDir(run_dir).load_checkpoint()


def test_a_resumed_evolution_keeps_its_pool_and_repeats_an_uninterrupted_one(tmp_path):
    whole = evolution(tmp_path / "whole", 4)
    evolution(tmp_path / "cut", 2)
    gin.clear_config()
    resumed = evolution(tmp_path / "cut", 4, resume=True)
    assert whole.keys() == resumed.keys() and {"pool_theta", "pool_origin"} <= whole.keys()
    for key in whole.keys() - {"metrics_line", "log_digests"}:  # the metrics hold wall times
        same = (torch.equal(whole[key], resumed[key]) if isinstance(whole[key], torch.Tensor)
                else whole[key] == resumed[key])  # fmt: skip
        assert same, key
    records_digest = [json.loads(c["log_digests"])["inner_loops.jsonl"] for c in (whole, resumed)]
    assert records_digest[0] == records_digest[1]
    assert records(RunDir(tmp_path / "whole")) == records(RunDir(tmp_path / "cut"))


@pytest.mark.slow
def test_the_pool_is_the_same_in_process_and_on_1_or_2_dask_workers(evolve_on_0_1_2_workers):
    pools = []
    for run in evolve_on_0_1_2_workers(experiment()):
        ckpt = run.load_checkpoint()
        pools.append((ckpt["pool_theta"].numpy(), ckpt["pool_origin"].numpy(), records(run)))
    for other in pools[1:]:
        np.testing.assert_array_equal(other[0], pools[0][0])
        np.testing.assert_array_equal(other[1], pools[0][1])
        assert other[2] == pools[0][2]


@pytest.mark.parametrize("experiment_file", [c for c in config.experiments() if c != "base.gin"])
def test_every_experiment_runs_with_the_extension_and_starts_from_past_policies(
    tmp_path, experiment_file
):
    exp = experiment("Experiment.epochs = 2",
                     files=[experiment_file, "extensions/past_init.gin", "debug.gin"])  # fmt: skip
    run = new_run(tmp_path / "run")
    evolve(exp, run, Serial())
    assert [m["failures"] for m in run.metrics()] == [0, 0]
    assert any(row["theta0_from"] for row in records(run) if row["epoch"] == 1)
