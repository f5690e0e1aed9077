"""The inner loop: pickling, determinism, independence of batch-mates, guidance, failures."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch

from epgkit.inner_loop import InnerLoop, Job, run_batch
from epgkit.losses import EPGLoss, PPOLoss
from epgkit.policies import CategoricalMLP
from epgkit.registry import register


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


def test_an_inner_loop_alone_matches_it_in_a_batch(tiny_inner):
    batch = jobs(tiny_inner, 4)
    together = tiny_inner.run(batch)
    alone = tiny_inner.run([batch[2]])
    assert alone[0].fitness == pytest.approx(together[2].fitness, rel=1e-4)


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


@register("loss")
@dataclasses.dataclass(frozen=True)
class NaNAfterFirstUpdate(EPGLoss):
    """A loss that turns NaN for inner loops whose task seed is odd (to test failures)."""

    def __call__(self, ctx, phi, state, hist, pi, logp, rows, prep):
        out = super().__call__(ctx, phi, state, hist, pi, logp, rows, prep)
        odd = torch.tensor([bool(v) for v in (phi[:, 0] > 1e6)])
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
    ],
)
def test_invalid_inner_loop_settings_are_refused(tiny_inner, change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(tiny_inner, **change)
