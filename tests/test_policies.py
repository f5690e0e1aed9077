"""Policies, over every registered one, checked against torch.distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epgkit.dims import Dims
from epgkit.policies import CategoricalMLP, GaussianMLP
from epgkit.registry import registered

BOX = Dims(obs_dim=4, act_dim=3, discrete=False)
DISCRETE = Dims(obs_dim=4, act_dim=5, discrete=True)


def dims_for(policy) -> Dims:
    return DISCRETE if isinstance(policy, CategoricalMLP) else BOX


@pytest.mark.parametrize("name", list(registered("policy")))
def test_policy_shapes_sampling_and_log_prob(name):
    policy = registered("policy")[name]()
    dims = dims_for(policy)
    theta = policy.init(dims, [np.random.default_rng(i) for i in range(3)])
    obs = torch.randn(3, 7, dims.obs_dim)
    dist = policy.dist(theta, obs)
    assert dist.shape == (3, 7, policy.dist_dim(dims))
    noise = torch.from_numpy(
        np.stack([policy.draw_noise(np.random.default_rng(i), 7, dims) for i in range(3)])
    )
    act = policy.sample(dist, noise)
    logp = policy.log_prob(dist, act)
    assert logp.shape == (3, 7) and torch.all(logp <= 1e-6 + (0 if dims.discrete else 10))
    assert torch.allclose(policy.kl(dist, dist), torch.zeros(3, 7), atol=1e-6)


@pytest.mark.parametrize("name", list(registered("policy")))
def test_policy_slices_do_not_depend_on_the_number_of_inner_loops(name):
    policy = registered("policy")[name]()
    dims = dims_for(policy)
    many = policy.init(dims, [np.random.default_rng(i) for i in range(4)])
    one = policy.init(dims, [np.random.default_rng(2)])
    for key in many:
        torch.testing.assert_close(many[key][2:3], one[key])


def test_gaussian_matches_torch_normal():
    policy = GaussianMLP(init_log_std=-0.5)
    theta = policy.init(BOX, [np.random.default_rng(0)])
    dist = policy.dist(theta, torch.randn(1, 5, 4))
    mean, log_std = dist.chunk(2, -1)
    ref = torch.distributions.Normal(mean, log_std.exp())
    act = policy.sample(dist, torch.randn(1, 5, 3))
    torch.testing.assert_close(policy.log_prob(dist, act), ref.log_prob(act).sum(-1))
    other = dist + 0.3
    ref_other = torch.distributions.Normal(*[t for t in (other[..., :3], other[..., 3:].exp())])
    torch.testing.assert_close(
        policy.kl(dist, other), torch.distributions.kl_divergence(ref, ref_other).sum(-1)
    )


def test_categorical_samples_follow_the_probabilities():
    policy = CategoricalMLP()
    probs = torch.tensor([[[0.1, 0.2, 0.7]]]).expand(1, 20_000, 3)
    u = torch.from_numpy(policy.draw_noise(np.random.default_rng(0), 20_000, DISCRETE))[None]
    act = policy.sample(probs, u)
    freq = torch.bincount(act.long().flatten(), minlength=3) / 20_000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.7]), atol=0.01, rtol=0)
    torch.testing.assert_close(
        policy.log_prob(probs[:, :1], torch.tensor([[[2.0]]])), torch.log(torch.tensor([[0.7]]))
    )
