"""The inner loop: pickling, determinism, independence of batch-mates, guidance, failures."""

from __future__ import annotations

import dataclasses
import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch

from epgkit.method.inner_loop import InnerLoop, Job, run_batch
from epgkit.method.losses import DPOLoss, EPGLoss, PPOLoss
from epgkit.method.policies import CategoricalMLP, GaussianMLP


def jobs(inner: InnerLoop, n: int, alpha: float = 0.5, seed: int = 0) -> list[Job]:
    phi = inner.init_phi(np.random.default_rng(seed))
    return [Job(phi, alpha, task_seed=100 + i, seed=1000 + i, index=i) for i in range(n)]


def test_inner_loop_pickles_with_the_standard_library(tiny_inner):
    batch = jobs(tiny_inner, 2)
    inner2, batch2 = pickle.loads(pickle.dumps((tiny_inner, batch)))
    assert inner2 == tiny_inner
    a, b = run_batch(tiny_inner, batch), run_batch(inner2, batch2)
    assert [r.fitness for r in a] == [r.fitness for r in b]


def test_results_report_seeds_task_and_steps(tiny_inner):
    results = tiny_inner.run(jobs(tiny_inner, 3))
    for i, r in enumerate(results):
        assert (r.index, r.task_seed, r.seed) == (i, 100 + i, 1000 + i)
        assert r.failed is None and math.isfinite(r.fitness)
        assert r.fitness == pytest.approx(np.mean(r.eval_returns))
        assert r.task["task_seed"] == 100 + i
        assert r.env_steps == tiny_inner.steps + 50  # one 50-step evaluation episode
        assert len(r.kl) == tiny_inner.steps // tiny_inner.update_every
        assert all(k >= 0 for k in r.kl)
        assert [t for t, _ in r.episodes] == [50, 100]


def test_same_seeds_give_identical_results(tiny_inner):
    a = tiny_inner.run(jobs(tiny_inner, 2))
    b = tiny_inner.run(jobs(tiny_inner, 2))
    assert [(r.fitness, r.kl) for r in a] == [(r.fitness, r.kl) for r in b]


@pytest.mark.parametrize(
    ("env_id", "alpha"),
    [
        ("epgkit/PointGoal-v0", 0.0),  # the evolved loss alone, with the goal as task signal
        ("epgkit/PointGoal-v0", 0.5),  # blended with PPO (a value net with one output)
        ("epgkit/RandomHopper-v0", 0.5),
        ("CartPole-v1", 0.5),  # categorical policy
    ],
)
def test_an_inner_loop_does_not_depend_on_its_batch_mates(tiny_inner, env_id, alpha):
    # Each slot of a lockstep batch has its own env, seeds, normalizer and optimizer state; a
    # slot that read a neighbour's would change its result far beyond rounding. Bits are not
    # compared: BLAS may pick another kernel per batch size (it does on AMD EPYC), which is why
    # the determinism contract fixes K.
    policy = CategoricalMLP() if env_id == "CartPole-v1" else GaussianMLP()
    inner = dataclasses.replace(tiny_inner, env_id=env_id, policy=policy)
    batch = jobs(inner, 4, alpha=alpha)
    runs = [inner.run(batch, keep_policy=True), inner.run(batch[1:3], keep_policy=True)]
    runs.append([inner.run([job], keep_policy=True)[0] for job in batch[1:3]])
    for got in runs[1:]:
        for a, b in zip(runs[0][1:3], got, strict=True):
            assert [t for t, _ in a.episodes] == [t for t, _ in b.episodes]
            np.testing.assert_allclose(a.eval_returns, b.eval_returns, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(a.kl, b.kl, rtol=1e-3, atol=1e-9)
            for name, value in a.policy.items():
                np.testing.assert_allclose(value, b.policy[name], rtol=1e-4, atol=1e-6,
                                           err_msg=name)  # fmt: skip


def test_the_same_batch_gives_the_same_bits_after_other_batches(tiny_inner):
    # What the determinism contract rests on: a batch's result is a function of its jobs
    # alone, whatever ran before it in the same worker process.
    batch = jobs(tiny_inner, 3, alpha=0.5)
    first = tiny_inner.run(batch, keep_policy=True)
    tiny_inner.run(jobs(tiny_inner, 2, alpha=0.0, seed=7))
    again = tiny_inner.run(batch, keep_policy=True)
    for a, b in zip(first, again, strict=True):
        assert (a.fitness, a.eval_returns, a.episodes, a.kl) == (
            b.fitness, b.eval_returns, b.episodes, b.kl)  # fmt: skip
        for name, value in a.policy.items():
            np.testing.assert_array_equal(value, b.policy[name], err_msg=name)


def test_full_guidance_ignores_phi_and_no_guidance_depends_on_it(tiny_inner):
    def fitness(alpha: float, phi_seed: int) -> float:
        return tiny_inner.run(jobs(tiny_inner, 1, alpha, seed=phi_seed))[0].fitness

    assert fitness(1.0, 0) == fitness(1.0, 1)
    assert fitness(0.0, 0) != fitness(0.0, 1)


def test_ppo_in_the_inner_loop_learns_pointgoal():
    inner = InnerLoop(
        env_id="epgkit/PointGoal-v0",
        loss=PPOLoss(),
        guide=None,
        steps=3072,
        update_every=64,
        buffer_size=64,
        lr=3e-3,
        eval_episodes=3,
    )
    trained = [r.fitness for r in inner.run(jobs(inner, 4, alpha=0.0))]
    untrained = [
        r.fitness for r in dataclasses.replace(inner, lr=1e-12).run(jobs(inner, 4, alpha=0.0))
    ]
    assert np.mean(trained) > np.mean(untrained) + 10


def test_dpo_guides_through_gin_like_ppo():
    from epgkit.method.experiment import Experiment
    from epgkit.run import config

    config.parse(["quickstart.gin", "debug.gin"], ["InnerLoop.guide = @DPOLoss()"])
    inner = dataclasses.replace(config.build(Experiment).inner, steps=128, minibatch=16)
    assert inner.guide == DPOLoss()
    full = [r.fitness for r in inner.run(jobs(inner, 2, alpha=1.0))]
    assert full == [r.fitness for r in inner.run(jobs(inner, 2, alpha=1.0, seed=1))]  # φ unused
    ppo = dataclasses.replace(inner, guide=PPOLoss())
    # Two minibatches an update: the second sees r ≠ 1, where the drift and clipping differ.
    assert all(np.isfinite(full)) and full != [r.fitness for r in ppo.run(jobs(ppo, 2, 1.0))]


def test_categorical_policy_runs_on_a_discrete_env():
    inner = InnerLoop(
        env_id="CartPole-v1",
        policy=CategoricalMLP(),
        steps=128,
        update_every=32,
        buffer_size=64,
        eval_episodes=1,
        loss=EPGLoss(strides=(4, 2)),
    )
    (result,) = inner.run(jobs(inner, 1))
    assert result.failed is None and result.fitness >= 8  # CartPole pays 1 per step


@dataclasses.dataclass(frozen=True)
class NaNAfterFirstUpdate(EPGLoss):
    """A loss that turns NaN for inner loops whose task seed is odd (to test failures)."""

    def __call__(self, batch, shared):
        out = super().__call__(batch, shared)
        odd = torch.tensor([bool(v) for v in (batch.phi[:, 0] > 1e6)])
        return torch.where(odd.unsqueeze(1), torch.full_like(out, math.nan), out)


def test_a_nan_loss_fails_only_its_own_inner_loop(tiny_inner):
    inner = dataclasses.replace(tiny_inner, loss=NaNAfterFirstUpdate(strides=(4, 2)))
    batch = jobs(inner, 3, alpha=0.0)
    poisoned = batch[1].phi.copy()
    poisoned[0] = 1e7
    batch[1] = dataclasses.replace(batch[1], phi=poisoned)
    results = inner.run(batch)
    assert results[1].failed == "non-finite loss" and results[1].fitness == -math.inf
    assert results[0].failed is None and math.isfinite(results[0].fitness)
    assert results[0].fitness == inner.run([batch[0]])[0].fitness


@pytest.mark.parametrize(
    "change,match",
    [
        ({"update_every": 128, "buffer_size": 64}, "≤ buffer_size"),
        ({"minibatch": 48}, "minibatch must divide"),
        ({"steps": 100}, "multiple of update_every"),
        ({"reduce": "max"}, "reduce"),
        ({"passes": 0}, "passes"),
        ({"eval_max_steps": 0}, "eval_max_steps must be ≥ 1"),
        ({"eval_max_steps": -5}, "eval_max_steps must be ≥ 1"),
    ],
)
def test_invalid_inner_loop_settings_are_refused(tiny_inner, change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(tiny_inner, **change)


@pytest.mark.parametrize(
    "env_id,match",
    [
        ("mymod:Foo-v0", "'mymod:Foo-v0': module 'mymod' cannot be imported"),
        ("epgkit/PointGol-v0", "Close registered ids: epgkit/PointGoal-v0"),
        ("nothing-like-it", "epgkit's task families: .*epgkit/PointGoal-v0"),
    ],
)
def test_an_env_id_that_cannot_be_made_is_a_config_error(tiny_inner, env_id, match):
    from epgkit.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(tiny_inner, env_id=env_id).dims()


def test_a_broken_entry_point_is_a_config_error(tiny_inner):
    from epgkit.errors import ConfigError

    gym.register("epgkit_test/Broken-v0", entry_point="epgkit.envs.point:NoSuchEnv")
    try:
        with pytest.raises(ConfigError, match="'epgkit.envs.point:NoSuchEnv' does not exist"):
            dataclasses.replace(tiny_inner, env_id="epgkit_test/Broken-v0").dims()
    finally:
        del gym.registry["epgkit_test/Broken-v0"]


# --- the fast paths of the inner loop (issue 6) ---------------------------------------------


def test_flat_adam_takes_the_steps_of_torch_adam():
    from epgkit.method.flat_adam import FlatAdam

    g = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(3, 4, 2, generator=g), "b": torch.randn(3, 1, 2, generator=g)}
    x = torch.randn(3, 5, 4, generator=g)
    ours = {k: v.clone() for k, v in start.items()}
    opt = FlatAdam([ours], lr=0.01)
    ref = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    ref_opt = torch.optim.Adam(list(ref.values()), lr=0.01, betas=(0.9, 0.999))
    for _ in range(5):
        for params, zero, step in ((ours, opt.zero_grad, opt.step), (ref, ref_opt.zero_grad, None)):
            zero()
            torch.baddbmm(params["b"], x, params["w"]).square().sum().backward()
            (step or ref_opt.step)()
    for key in start:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-6, atol=1e-7)
        assert ours[key]._base is not None  # still a view of the flat buffer


def test_stepping_the_unwrapped_env_with_our_time_limit_changes_nothing(tiny_inner, monkeypatch):
    import epgkit.method.batch_envs as batch_envs

    fast = tiny_inner.run(jobs(tiny_inner, 2))
    monkeypatch.setattr(batch_envs, "_core", lambda env: (env, None))  # through the wrappers
    slow = tiny_inner.run(jobs(tiny_inner, 2))
    for a, b in zip(fast, slow, strict=True):
        assert (a.fitness, a.episodes, a.kl) == (b.fitness, b.episodes, b.kl)
        assert a.env_steps == b.env_steps


@pytest.mark.parametrize("policy_name", ["GaussianMLP", "CategoricalMLP"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_numpy_acting_matches_the_torch_policy(policy_name, deterministic):
    from epgkit.components import registered
    from epgkit.method.dims import Dims

    policy = registered("policy")[policy_name]()
    dims = Dims(obs_dim=5, act_dim=4, discrete=policy_name == "CategoricalMLP")
    theta = policy.init(dims, [np.random.default_rng(i) for i in range(3)])
    obs = np.random.default_rng(7).standard_normal((3, 5)).astype(np.float32)
    noise = (
        None
        if deterministic
        else np.stack(
            [policy.draw_noise(np.random.default_rng(10 + i), 1, dims)[0] for i in range(3)]
        )
    )
    dist, act, logp = policy.act({k: v.numpy() for k, v in theta.items()}, obs, noise)
    ref_dist = policy.dist(theta, torch.from_numpy(obs)[:, None])
    if deterministic:
        ref_act = policy.mode(ref_dist)
    else:
        ref_act = policy.sample(ref_dist, torch.from_numpy(noise)[:, None])
    ref_logp = policy.log_prob(ref_dist, ref_act)
    np.testing.assert_allclose(dist, ref_dist[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act, ref_act[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logp, ref_logp[:, 0].numpy(), rtol=1e-5, atol=1e-5)
    assert dist.dtype == act.dtype == logp.dtype == np.float32


@dataclasses.dataclass(frozen=True)
class TorchOnlyGaussian:
    """GaussianMLP without the NumPy acting path: the inner loop must act through torch."""

    inner: GaussianMLP = GaussianMLP()

    def __getattr__(self, name):
        if name == "act":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_policy_without_numpy_acting_runs_through_torch(tiny_inner):
    inner = dataclasses.replace(tiny_inner, policy=TorchOnlyGaussian())
    assert not hasattr(inner.policy, "act")
    torch_results = inner.run(jobs(inner, 2))
    numpy_results = tiny_inner.run(jobs(tiny_inner, 2))
    for a, b in zip(torch_results, numpy_results, strict=True):
        assert a.failed is None and a.fitness == pytest.approx(b.fitness, rel=1e-3)


class NaNAfter(gym.Env):
    """A 1-D env whose physics blows up (NaN observation) at step ``bad_step`` on odd tasks."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, task_seed: int = 0, bad_step: int = 0):
        self.bad_step, self.t = (bad_step if task_seed % 2 else -1), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        value = math.nan if self.t == self.bad_step else 0.0
        return np.full(1, value, np.float32), -abs(float(action[0])), False, False, {}


gym.register("test/NaNAfter-v0", entry_point=NaNAfter, max_episode_steps=16)


def test_non_finite_physics_fails_only_its_own_inner_loop(tiny_inner):
    inner = dataclasses.replace(
        tiny_inner, env_id="test/NaNAfter-v0", env_kwargs=(("bad_step", 40),),
        loss=EPGLoss(strides=(4, 2)),
    )  # fmt: skip
    batch = jobs(inner, 3)  # task seeds 100, 101, 102: the second one blows up
    results = inner.run(batch)
    assert results[1].failed == "non-finite observation or reward at step 40"
    assert results[1].fitness == -math.inf
    assert all(math.isfinite(k) for k in results[1].kl)  # the NaN never reached its buffer
    assert [r.failed for r in (results[0], results[2])] == [None, None]
    assert results[2].fitness == inner.run(batch[2:])[0].fitness


def test_more_passes_take_more_adam_steps_and_one_pass_is_the_default(tiny_inner):
    batch = jobs(tiny_inner, 2, alpha=0.0)
    one = tiny_inner.run(batch)
    assert [r.kl for r in dataclasses.replace(tiny_inner, passes=1).run(batch)] == [
        r.kl for r in one
    ]
    three = dataclasses.replace(tiny_inner, passes=3).run(batch)
    # Three passes move the policy further per update than one.
    assert np.mean([np.mean(r.kl) for r in three]) > np.mean([np.mean(r.kl) for r in one])


def test_the_history_records_each_rows_lifetime_progress(tiny_inner):
    # EPGLoss.use_progress reads t / U off the history: at the last update its last M rows are
    # the final steps t = U - M .. U - 1.
    inner = dataclasses.replace(tiny_inner, loss=EPGLoss(use_progress=True))
    seen = []
    record = lambda at: seen.append(at.update.hist.progress.clone())  # noqa: E731
    results = inner.run(jobs(inner, 2, alpha=0.0), on_update=record)
    assert all(r.failed is None and math.isfinite(r.fitness) for r in results)
    u, m = inner.steps, inner.update_every
    assert len(seen) == u // m
    expected = np.arange(u - m, u, dtype=np.float32) / u
    for got in seen[-1][:, -m:].numpy():
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@dataclasses.dataclass(frozen=True)
class OldInterfaceLoss(PPOLoss):
    """A loss as written before ``Update`` and ``Batch``: ``begin_update`` and eight arguments."""

    prepare = None  # hides PPOLoss.prepare, as a loss of the old interface had none

    def begin_update(self, ctx, state, hist):
        return {}

    def __call__(self, ctx, phi, state, hist, pi, logp, rows, prep):
        raise AssertionError("never called")


def test_a_loss_of_the_old_interface_is_refused_saying_what_changed(tiny_inner):
    from epgkit.errors import ConfigError

    inner = dataclasses.replace(tiny_inner, loss=OldInterfaceLoss(), guide=None)
    with pytest.raises(ConfigError, match=r"OldInterfaceLoss is written for epgkit's old loss "
                                          r"interface .* prepare\(update\)"):  # fmt: skip
        inner.run(jobs(inner, 1, alpha=0.0))
