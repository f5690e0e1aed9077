"""gin/extensions/: each fragment runs on every experiment and does what its header says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from epgkit.method.evolve import evolve
from epgkit.method.executor import Serial
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.method.losses import PPOLoss
from epgkit.method.mlp import flat_params
from epgkit.run import config
from epgkit.run.rundir import RunDir

EXTENSIONS = [c for c in config.available() if c.startswith("extensions/")]
EXPERIMENTS = [c for c in config.experiments() if c != "base.gin"]


def build(*files: str, bindings: tuple[str, ...] = ()) -> Experiment:
    config.parse(list(files), list(bindings))
    return config.with_policies(config.build(Experiment))


def run(tmp_path, exp: Experiment) -> RunDir:
    rundir = RunDir(tmp_path / "run")
    rundir.create("# test\n", [])
    evolve(exp, rundir, Serial())
    return rundir


def test_the_extensions_are_shipped():
    shipped = {"extensions/epg_init.gin", "extensions/ppo_init.gin", "extensions/past_init.gin"}
    assert shipped <= set(EXTENSIONS)


@pytest.mark.parametrize("extension", EXTENSIONS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_extension_runs_on_every_experiment_with_debug(tmp_path, experiment, extension):
    exp = build(experiment, extension, "debug.gin", bindings=("Experiment.epochs = 1",))
    rows = run(tmp_path, exp).metrics()
    assert len(rows) == 1 and rows[0]["failures"] == 0
    assert np.isfinite(rows[0]["fitness_mean"])


def theta_size(exp: Experiment) -> int:
    ctx = exp.inner.context()
    theta = exp.inner.policy_for(ctx.dims).init(ctx.dims, [np.random.default_rng(0)])
    return int(flat_params(theta).shape[1])


@pytest.mark.parametrize("extension", ["extensions/epg_init.gin", "extensions/ppo_init.gin"])
def test_under_an_init_extension_the_es_evolves_theta0(tmp_path, extension):
    plain = build("quickstart.gin", "debug.gin")
    exp = build("quickstart.gin", "debug.gin", extension, bindings=("Experiment.epochs = 3",))
    loss_size = exp.inner.loss.phi_size(exp.inner.context())
    assert exp.inner.phi_size() == loss_size + theta_size(exp)
    assert plain.inner.phi_size() == plain.inner.loss.phi_size(plain.inner.context())
    start = exp.inner.init_phi(np.random.default_rng(np.random.SeedSequence([exp.seed, 0])))
    end = run(tmp_path, exp).load_checkpoint()["phi"].numpy()
    assert end.shape == start.shape
    assert np.abs(end[loss_size:] - start[loss_size:]).max() > 0  # θ₀ moved
    # The baselines keep a random start: they evolve nothing.
    assert not any(b.evolve_init for b in exp.baselines.values())


def test_an_inner_loop_under_evolve_init_starts_from_the_evolved_theta0():
    # With a vanishing step size training cannot move θ: what is left is where it started.
    inner = InnerLoop(env_id="epgkit/PointGoal-v0", loss=PPOLoss(), guide=None, steps=64,
                      update_every=32, buffer_size=32, eval_episodes=1, lr=1e-12,
                      evolve_init=True)  # fmt: skip
    finals = []
    for seed in (1, 2):
        theta0 = inner.init_phi(np.random.default_rng(seed))
        assert theta0.size == inner.phi_size()
        result = inner.run([Job(theta0, 0.0, task_seed=5, seed=9, index=0)], keep_policy=True)[0]
        policy = {k: v for k, v in result.policy.items() if not k.startswith("obs_")}
        got = np.concatenate([v.reshape(-1) for v in policy.values()])
        np.testing.assert_allclose(got, theta0, atol=1e-6)
        finals.append(got)
    assert np.abs(finals[0] - finals[1]).max() > 1e-3
    # Without evolve_init the same job's start is the random θ drawn from its seed.
    plain = dataclasses.replace(inner, evolve_init=False)
    empty = np.zeros(0, np.float32)
    result = plain.run([Job(empty, 0.0, task_seed=5, seed=9, index=0)], keep_policy=True)[0]
    got = np.concatenate(
        [v.reshape(-1) for k, v in result.policy.items() if not k.startswith("obs_")]
    )
    assert np.abs(got - finals[0]).max() > 1e-3


def test_baselines_start_from_a_random_theta_even_in_a_scope_the_extension_does_not_name():
    # A tuning fragment's new scope (baselines/pointgoal.gin's ppo_gl/) inherits the unscoped
    # InnerLoop.evolve_init = True of epg_init.gin; test-time training must still give every
    # baseline a random start, as a PPO φ carries no θ₀ to start from.
    from epgkit.run import train

    exp = build("quickstart.gin", "extensions/epg_init.gin", "debug.gin",
                bindings=("include 'baselines/pointgoal.gin'",))  # fmt: skip
    assert exp.baselines["ppo_gl"].evolve_init  # what the configs alone give
    loops = train.methods(exp, ["ppo", "ppo_gl"], None, None)
    assert loops[train.LEARNED].evolve_init
    assert not loops["ppo"].evolve_init and not loops["ppo_gl"].evolve_init
