"""Policies, over every registered one, checked against torch.distributions; which one an env
gets."""

from __future__ import annotations

import gin
import numpy as np
import pytest
import torch

from epgkit.components import registered
from epgkit.errors import ConfigError
from epgkit.method.dims import Dims
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop
from epgkit.method.policies import (
    ACTIVATIONS,
    CategoricalMLP,
    GaussianMLP,
    default_policy,
    fitting,
    mlp,
)
from epgkit.run import config

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


# --- which policy an env gets ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(registered("policy")))
def test_every_policy_declares_its_action_space(name):
    assert isinstance(registered("policy")[name].discrete, bool)


def test_without_a_policy_box_actions_get_the_gaussian_and_discrete_the_categorical():
    assert default_policy(BOX) is GaussianMLP and default_policy(DISCRETE) is CategoricalMLP
    assert fitting(BOX) == ["GaussianMLP"] and fitting(DISCRETE) == ["CategoricalMLP"]
    cartpole = InnerLoop(env_id="CartPole-v1")
    assert cartpole.policy is None
    assert cartpole.policy_for(cartpole.dims()) == CategoricalMLP()
    pendulum = InnerLoop(env_id="Pendulum-v1", policy=GaussianMLP(hidden=(8,)))
    assert pendulum.policy_for(pendulum.dims()) == GaussianMLP(hidden=(8,))


def test_a_policy_for_another_action_space_is_refused_naming_what_fits():
    inner = InnerLoop(env_id="CartPole-v1", policy=GaussianMLP())
    with pytest.raises(ConfigError) as err:
        inner.context()
    assert str(err.value) == (
        "InnerLoop.policy = @GaussianMLP() cannot act in CartPole-v1, whose action space is "
        "Discrete(2); policies for Discrete actions: CategoricalMLP (or None, to choose by the "
        "action space)"
    )


def test_the_experiment_builds_the_chosen_policy_through_gin_for_every_inner_loop():
    config.parse(["quickstart.gin", "debug.gin"],
                 ["InnerLoop.env_id = 'CartPole-v1'", "CategoricalMLP.hidden = (16,)"])  # fmt: skip
    exp = config.build(Experiment)
    assert exp.inner.policy is None
    chosen = config.with_policies(exp)
    assert chosen.inner.policy == CategoricalMLP(hidden=(16,))
    assert {b.policy for b in chosen.baselines.values()} == {CategoricalMLP(hidden=(16,))}
    assert "CategoricalMLP.hidden = (16,)" in gin.operative_config_str()
    assert config.with_policies(chosen) is chosen


# --- architectures (Figure 17) ------------------------------------------------------------


@pytest.mark.parametrize("name", list(registered("policy")))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_acts_in_numpy_as_in_torch(name, activation):
    policy = registered("policy")[name](hidden=(16, 8, 8), activation=activation)
    dims = dims_for(policy)
    theta = policy.init(dims, [np.random.default_rng(i) for i in range(3)])
    obs = 3 * np.random.default_rng(7).standard_normal((3, dims.obs_dim)).astype(np.float32)
    dist, _, _ = policy.act({k: v.numpy() for k, v in theta.items()}, obs, None)
    ref = policy.dist(theta, torch.from_numpy(obs)[:, None])[:, 0]
    np.testing.assert_allclose(dist, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert [k for k in theta if k.startswith("pi_w")] == ["pi_w0", "pi_w1", "pi_w2", "pi_w3"]


def test_the_activation_is_the_one_named():
    theta = GaussianMLP().init(BOX, [np.random.default_rng(0)])
    obs = torch.randn(1, 5, 4)
    h = obs @ theta["pi_w0"] + theta["pi_b0"]
    for name, f in [("tanh", torch.tanh), ("relu", torch.relu), ("elu", torch.nn.functional.elu)]:
        out = mlp({"w0": theta["pi_w0"], "b0": theta["pi_b0"], "w1": torch.eye(64)[None],
                   "b1": torch.zeros(1, 1, 64)}, "", obs, name)  # fmt: skip
        torch.testing.assert_close(out, f(h))
    tanh_dist = GaussianMLP().dist(theta, obs)
    relu_dist = GaussianMLP(activation="relu").dist(theta, obs)
    assert not torch.allclose(tanh_dist, relu_dist)


@pytest.mark.parametrize("cls", [GaussianMLP, CategoricalMLP])
def test_unknown_activations_and_empty_layers_are_one_clear_error(cls):
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; allowed: tanh, relu, elu"):
        cls(activation="swish")
    with pytest.raises(ValueError, match="hidden sizes must be positive integers"):
        cls(hidden=(64, 0))


@pytest.mark.parametrize("named", [False, True])
def test_architecture_is_set_in_gin_and_a_bad_name_is_a_config_error(named):
    """Whether the config names the policy or leaves it to the action space (None)."""
    files = ["quickstart.gin", "debug.gin"]
    policy = ["InnerLoop.policy = @GaussianMLP()"] if named else []
    bindings = ["GaussianMLP.hidden = (128, 128, 128)", "GaussianMLP.activation = 'relu'"]
    config.parse(files, [*policy, *bindings])
    exp = config.with_policies(config.build(Experiment))
    assert exp.inner.policy == GaussianMLP(hidden=(128, 128, 128), activation="relu")
    config.parse(files, [*policy, "GaussianMLP.activation = 'sigmoid'"])
    with pytest.raises(config.ConfigError, match="unknown activation 'sigmoid'; allowed: tanh"):
        config.with_policies(config.build(Experiment))
