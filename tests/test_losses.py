"""Losses: every registered one by parametrization, then the paper's architecture in detail."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from epgkit.components import registered
from epgkit.method.dims import Dims
from epgkit.method.losses import (
    DPOLoss,
    EPGLoss,
    History,
    LossContext,
    PPOLoss,
    ReinforceLoss,
    Update,
    dpo_drift,
    gae,
)
from epgkit.method.losses.base import prepare
from epgkit.method.policies import CategoricalMLP, GaussianMLP

DIMS = Dims(
    obs_dim=3,
    act_dim=2,
    discrete=False,
    signal_dim=2,
    reward_in_loss=True,
    act_low=(-1.0, -1.0),
    act_high=(1.0, 1.0),
)
K, N, M, B = 3, 64, 16, 8
CTX = LossContext(DIMS, dist_dim=4, buffer_size=N, update_every=M)
SMALL = {"EPGLoss": {"strides": (4, 2)}}


def history(seed: int = 0, k: int = K) -> History:
    g = torch.Generator().manual_seed(seed)
    t = N + M - 1

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return History(
        obs=r(k, t, 3),
        act=r(k, t, 2),
        act_raw=r(k, t, 2),
        reward=r(k, t),
        reward_scaled=r(k, t),
        done=(torch.rand(k, t, generator=g) < 0.05).float(),
        signal=r(k, t, 2),
        logp_old=r(k, t),
        next_obs=r(k, 3),
        pi_old=r(k, t, 4),
        progress=torch.rand(k, t, generator=g),
    )


def setup(name: str, k: int = K, seed: int = 0):
    loss = registered("loss")[name](**SMALL.get(name, {}))
    rngs = [np.random.default_rng(seed + i) for i in range(k)]
    phi = torch.from_numpy(np.stack([loss.init_phi(CTX, r) for r in rngs]))
    policy = GaussianMLP()
    theta = policy.init(DIMS, rngs)
    state = loss.init_state(CTX, phi, rngs)
    for p in [*theta.values(), *state.values()]:
        p.requires_grad_(True)
    return loss, phi, policy, theta, state


def evaluate(loss, phi, policy, theta, state, hist, rows):
    pi = policy.dist(theta, hist.obs)
    logp = policy.log_prob(pi, hist.act_raw)
    update = Update(CTX, phi, state, hist)
    with torch.no_grad():
        prepared = prepare(loss, update)
    return loss(update.batch(pi, logp, rows), prepared)


def last_m_rows(k: int = K) -> torch.Tensor:
    return torch.stack(
        [torch.randperm(M, generator=torch.Generator().manual_seed(i))[:B] for i in range(k)]
    ) + (N - 1)


@pytest.mark.parametrize("name", list(registered("loss")))
def test_loss_gives_one_finite_loss_per_step_and_grads_reach_the_policy(name):
    loss, phi, policy, theta, state = setup(name)
    out = evaluate(loss, phi, policy, theta, state, history(), last_m_rows())
    assert out.shape == (K, B) and torch.isfinite(out).all()
    out.sum().backward()
    assert theta["pi_w0"].grad is not None and theta["pi_w0"].grad.abs().sum() > 0
    assert theta["log_std"].grad.abs().sum() > 0
    for name_, p in state.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name_


@pytest.mark.parametrize("name", list(registered("loss")))
def test_loss_of_one_inner_loop_ignores_its_batch_mates(name):
    loss, phi, policy, theta, state = setup(name)
    hist, rows = history(), last_m_rows()
    together = evaluate(loss, phi, policy, theta, state, hist, rows)
    one = {key: v[1:2].detach() for key, v in theta.items()}
    one_state = {key: v[1:2].detach() for key, v in state.items()}
    hist1 = History(**{f.name: getattr(hist, f.name)[1:2] for f in dataclasses.fields(hist)})
    alone = evaluate(loss, phi[1:2], policy, one, one_state, hist1, rows[1:2])
    torch.testing.assert_close(alone[0], together[1], rtol=1e-5, atol=1e-5)


def test_epg_loss_gradient_reaches_the_memory_unit_and_phi_is_flat():
    loss, phi, policy, theta, state = setup("EPGLoss")
    assert phi.shape == (K, loss.phi_size(CTX))
    assert set(state) == {"mem_w", "mem_b"}
    # The memory unit starts from φ's slice of it.
    shapes = loss.shapes(CTX)
    names = list(shapes)
    offset = sum(math.prod(shapes[n]) for n in names[: names.index("mem_w")])
    torch.testing.assert_close(
        state["mem_w"].detach().reshape(K, -1), phi[:, offset : offset + loss.memory_dim]
    )


def reference_epg_loss(loss: EPGLoss, phi_row, x_window, x_row):
    """Figure 2 written with nn.functional.conv1d for a single step's N-row window."""
    shapes = loss.shapes(CTX)
    parts, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        parts[name] = phi_row[start : start + size].reshape(shape)
        start += size
    (k1, k2), (s1, s2) = loss.kernels, loss.strides
    f = x_window.shape[-1]
    # Our flat layout is (kernel tap, feature) → channel; conv1d wants (out, in, tap).
    w1 = parts["conv1_w"].reshape(k1, f, -1).permute(2, 1, 0)
    h = F.leaky_relu(F.conv1d(x_window.T.unsqueeze(0), w1, parts["conv1_b"].reshape(-1), stride=s1))
    c1 = h.shape[1]
    w2 = parts["conv2_w"].reshape(k2, c1, -1).permute(2, 1, 0)
    h = F.leaky_relu(F.conv1d(h, w2, parts["conv2_b"].reshape(-1), stride=s2))
    context = h[0].T.reshape(-1) @ parts["fc_w"] + parts["fc_b"].reshape(-1)
    hid = F.leaky_relu(torch.cat([x_row, context]) @ parts["head1_w"] + parts["head1_b"][0])
    return hid @ parts["head2_w"][:, 0] + parts["head2_b"].reshape(())


def learned(loss: EPGLoss) -> tuple[torch.Tensor, GaussianMLP, dict, dict]:
    """φ, a Gaussian policy, its θ and the loss's own state for K inner loops."""
    rngs = [np.random.default_rng(i) for i in range(K)]
    phi = torch.from_numpy(np.stack([loss.init_phi(CTX, r) for r in rngs]))
    policy = GaussianMLP()
    return phi, policy, policy.init(DIMS, rngs), loss.init_state(CTX, phi, rngs)


def assert_matches_reference(loss, phi, x, rows, out) -> None:
    """Each step's loss equals Figure 2 on the plain rows ``x`` of its N-row window."""
    for k in range(K):
        for b in range(B):
            j = int(rows[k, b])
            ref = reference_epg_loss(loss, phi[k], x[k, j - N + 1 : j + 1], x[k, j])
            torch.testing.assert_close(out[k, b], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernels,strides", [((8, 4), (7, 2)), ((6, 4), (5, 2)), ((8, 4), (4, 2))])
def test_epg_loss_is_a_strided_temporal_convolution_over_each_steps_window(kernels, strides):
    loss = EPGLoss(kernels=kernels, strides=strides)
    phi, policy, theta, state = learned(loss)
    hist, rows = history(3), last_m_rows()
    with torch.no_grad():
        out = evaluate(loss, phi, policy, theta, state, hist, rows)
        pi = policy.dist(theta, hist.obs)
        mem = torch.tanh(state["mem_w"] + state["mem_b"])
        x = torch.cat(
            [
                hist.obs,
                hist.act,
                hist.done.unsqueeze(-1),
                mem.expand(K, hist.obs.shape[1], -1),
                pi,
                hist.reward.unsqueeze(-1),
                hist.signal,
            ],
            -1,
        )
        assert_matches_reference(loss, phi, x, rows, out)


def test_epg_loss_inputs_follow_the_env_and_the_switches():
    no_reward = dataclasses.replace(DIMS, reward_in_loss=False, signal_dim=0)
    ctx = dataclasses.replace(CTX, dims=no_reward)
    base = EPGLoss().row_size(ctx)
    assert EPGLoss(use_reward=True).row_size(ctx) == base + 1
    assert EPGLoss().row_size(CTX) == base + 1 + 2  # reward and the 2-D task signal
    assert EPGLoss(use_task_signal=False, use_reward=False).row_size(CTX) == base
    with pytest.raises(ValueError, match="task signal"):
        EPGLoss(use_task_signal=True).row_size(ctx)
    with pytest.raises(ValueError, match="too short"):
        EPGLoss().phi_size(dataclasses.replace(CTX, buffer_size=10))


def test_resolve_pins_the_inputs_that_follow_the_env_and_keeps_the_rest():
    bare = dataclasses.replace(DIMS, reward_in_loss=False, signal_dim=0)
    assert EPGLoss().resolve(DIMS) == EPGLoss(use_reward=True, use_task_signal=True)
    assert EPGLoss().resolve(bare) == EPGLoss(use_reward=False, use_task_signal=False)
    pinned = EPGLoss(hidden=8, use_reward=False).resolve(DIMS)
    assert pinned == EPGLoss(hidden=8, use_reward=False, use_task_signal=True)
    explicit_ones = [EPGLoss(use_reward=r, use_task_signal=not r) for r in (True, False)]
    for explicit in explicit_ones:
        assert explicit.resolve(bare) == explicit and explicit.resolve(DIMS) == explicit
    # Pinned on one env, the loss reads the same row on another.
    ctx = dataclasses.replace(CTX, dims=dataclasses.replace(DIMS, reward_in_loss=False))
    assert EPGLoss().resolve(DIMS).row_size(ctx) == EPGLoss().row_size(CTX)
    for pg in (PPOLoss(clip=0.1), DPOLoss(beta=0.5), ReinforceLoss(gamma=0.9)):
        assert pg.resolve(DIMS) is pg and pg.resolve(bare) is pg


def test_gae_matches_a_hand_computation():
    reward = torch.tensor([[1.0, 2.0, 3.0]])
    value = torch.tensor([[0.5, 0.5, 0.5, 10.0]])
    done = torch.tensor([[0.0, 1.0, 0.0]])
    g, lam = 0.9, 0.8
    d2 = 3 + g * 10 - 0.5
    d1 = 2 - 0.5  # the episode ends after step 1: no bootstrap
    d0 = 1 + g * 0.5 - 0.5
    expected = torch.tensor([[d0 + g * lam * d1, d1, d2]])
    torch.testing.assert_close(gae(reward, value, done, g, lam), expected)


def test_ppo_clips_the_ratio():
    loss, phi, policy, theta, state = setup("PPOLoss")
    hist, rows = history(), last_m_rows()
    with torch.no_grad():
        pi = policy.dist(theta, hist.obs)
        targets = loss.prepare(Update(CTX, phi, state, hist))
        far = dataclasses.replace(hist, logp_old=policy.log_prob(pi, hist.act_raw) - 5.0)
        batch = Update(CTX, phi, state, far).batch(pi, policy.log_prob(pi, hist.act_raw), rows)
        out = loss(batch, targets)
        recent = rows - (N - 1)
        adv = targets.adv.gather(1, recent)
        value_part = out + torch.min(math.exp(5) * adv, (1 + PPOLoss().clip) * adv)
    assert torch.all(value_part >= -1e-4)  # what is left is the (non-negative) value loss


@pytest.mark.parametrize("policy", [GaussianMLP(init_log_std=-0.3), CategoricalMLP()])
def test_ppos_entropy_bonus_is_the_entropy_of_either_policy(policy):
    discrete = isinstance(policy, CategoricalMLP)
    dims = dataclasses.replace(DIMS, discrete=discrete, act_dim=4 if discrete else 2)
    ctx = LossContext(dims, policy.dist_dim(dims), N, M)
    rngs = [np.random.default_rng(i) for i in range(K)]
    hist, rows = history(), last_m_rows()
    with torch.no_grad():
        pi = policy.dist(policy.init(dims, rngs), hist.obs)
        state = PPOLoss().init_state(ctx, torch.zeros(K, 0), rngs)
        update = Update(ctx, torch.zeros(K, 0), state, hist)
        targets = PPOLoss().prepare(update)
        batch = update.batch(pi, hist.logp_old, rows)
        plain, bonus = (PPOLoss(entropy_coef=c)(batch, targets) for c in (0.0, 0.1))
    at = pi.gather(1, rows.unsqueeze(-1).expand(-1, -1, pi.shape[-1]))
    if discrete:
        entropy = torch.distributions.Categorical(probs=at).entropy()
    else:  # up to the constant ½·log(2πe) per dimension, which has no gradient
        mean, log_std = at.chunk(2, -1)
        entropy = torch.distributions.Normal(mean, log_std.exp()).entropy().sum(-1)
        entropy = entropy - 2 * 0.5 * math.log(2 * math.pi * math.e)
    torch.testing.assert_close(plain - bonus, 0.1 * entropy)


def test_dpo_drift_is_zero_at_r_1_never_negative_and_flat_there():
    log_ratio = (torch.arange(-60, 61) * 0.05).repeat_interleave(41)  # exact zeros
    adv = (torch.arange(-20, 21) * 0.2).repeat(121)
    drift = dpo_drift(log_ratio, adv, alpha=2.0, beta=0.6)
    assert torch.all(drift >= 0) and torch.isfinite(drift).all()
    assert torch.all(drift[log_ratio == 0] == 0)
    # Moving π against the advantage is not penalized: no drift where r·A falls.
    assert torch.all(drift[(adv >= 0) & (log_ratio < 0)] == 0)
    assert torch.all(drift[(adv < 0) & (log_ratio > 0)] == 0)
    assert torch.all(drift[adv * log_ratio > 0.5] > 0)  # and a drift where it rises
    # At r = 1 the objective's gradient is the policy gradient A, as for PPO.
    at_one = torch.zeros(41, requires_grad=True)
    adv = adv[:41]
    (grad,) = torch.autograd.grad(DPOLoss().objective(at_one, adv).sum(), at_one)
    torch.testing.assert_close(grad, adv)


def test_dpo_drift_matches_a_hand_computation():
    r = torch.tensor([1.5, 0.5, 2.0, 0.5, 1.0])
    adv = torch.tensor([1.5, -1.0, -1.0, 1.0, 3.0])
    expected = torch.tensor(
        [
            0.75 - 2 * math.tanh(0.75 / 2),  # A ≥ 0: (r − 1)·A = 0.75 − α·tanh(0.75 / α)
            math.log(2) - 0.6 * math.tanh(math.log(2) / 0.6),  # A < 0: log(r)·A = log 2
            0.0,  # A < 0, r > 1: log(r)·A < 0, cut by the ReLU
            0.0,  # A ≥ 0, r < 1: (r − 1)·A < 0
            0.0,  # r = 1
        ]
    )
    drift = dpo_drift(torch.log(r), adv, alpha=2.0, beta=0.6)
    torch.testing.assert_close(drift, expected)
    assert expected[0] == pytest.approx(0.0332862, abs=1e-6)
    assert expected[1] == pytest.approx(0.2014566, abs=1e-6)
    objective = DPOLoss().objective(torch.log(r), adv)
    torch.testing.assert_close(objective, r * adv - expected)
    # A larger α (β) flattens the drift: the objective stays closer to r·A.
    wide = DPOLoss(alpha=4.0, beta=1.2).objective(torch.log(r), adv)
    assert torch.all(wide >= objective) and torch.all(wide[:2] > objective[:2])


def test_dpo_loss_is_ppos_loss_with_the_drift_in_place_of_clipping():
    """Same advantages, returns, value term and sign as PPOLoss; only the objective differs."""
    _, phi, policy, theta, state = setup("PPOLoss")
    ppo, dpo = PPOLoss(entropy_coef=0.01), DPOLoss(entropy_coef=0.01)
    hist, rows = history(2), last_m_rows()
    with torch.no_grad():
        pi = policy.dist(theta, hist.obs)
        logp = policy.log_prob(pi, hist.act_raw)
        moved = dataclasses.replace(hist, logp_old=logp + 0.3 * torch.randn_like(logp))
        update = Update(CTX, phi, state, moved)
        targets = ppo.prepare(update)
        for name in ("adv", "ret"):
            torch.testing.assert_close(
                getattr(dpo.prepare(update), name), getattr(targets, name), rtol=0, atol=0
            )
        out_ppo = ppo(update.batch(pi, logp, rows), targets)
        out_dpo = dpo(update.batch(pi, logp, rows), targets)
        log_ratio = logp.gather(1, rows) - moved.logp_old.gather(1, rows)
        adv = targets.adv.gather(1, rows - (N - 1))
        r = log_ratio.exp()
        clipped = torch.min(r * adv, r.clamp(0.8, 1.2) * adv)
        drift = dpo_drift(log_ratio, adv, 2.0, 0.6)
    torch.testing.assert_close(out_dpo - out_ppo, clipped - (r * adv - drift))
    assert torch.any(drift > 0)  # the case exercises the drift


def test_dpo_refuses_non_positive_scales():
    with pytest.raises(ValueError, match="alpha and beta must be positive"):
        DPOLoss(alpha=0.0)
    with pytest.raises(ValueError, match="beta=-1"):
        DPOLoss(beta=-1.0)


@pytest.mark.parametrize(
    "switches",
    [
        {"use_logprob": True},
        {"use_reward": False, "use_task_signal": False},
        {"use_reward": True, "use_task_signal": False, "use_logprob": True, "memory_dim": 5},
        {"use_progress": True, "use_logprob": True},
    ],
)
def test_epg_loss_matches_figure_2_for_every_row_layout(switches):
    """The loss splits each row into data, memory and policy columns; any layout must give
    the loss of the plain concatenated row."""
    loss = EPGLoss(strides=(4, 2), **switches)
    phi, policy, theta, state = learned(loss)
    hist, rows = history(5), last_m_rows()
    reward, signal = loss._inputs(CTX)
    with torch.no_grad():
        out = evaluate(loss, phi, policy, theta, state, hist, rows)
        pi = policy.dist(theta, hist.obs)
        mem = torch.tanh(state["mem_w"] + state["mem_b"]).expand(K, hist.obs.shape[1], -1)
        cols = [hist.obs, hist.act, hist.done.unsqueeze(-1), mem, pi]
        cols += [hist.reward.unsqueeze(-1)] if reward else []
        cols += [hist.signal] if signal else []
        cols += [hist.progress.unsqueeze(-1)] if loss.use_progress else []
        cols += [policy.log_prob(pi, hist.act_raw).unsqueeze(-1)] if loss.use_logprob else []
        x = torch.cat(cols, -1)
        assert x.shape[-1] == loss.row_size(CTX)
        assert_matches_reference(loss, phi, x, rows, out)


def test_learned_advantage_is_a_policy_gradient_with_a_weight_from_the_data_alone():
    """Each step's loss is −Â·log π(a|s), Â being Figure 2's network on rows without π(·|s);
    θ gets −Â·∇ log π and the memory, which Â reads, gets no gradient."""
    loss = EPGLoss(strides=(4, 2), learned_advantage=True, use_progress=True)
    phi, policy, theta, state = learned(loss)
    for p in [*theta.values(), *state.values()]:
        p.requires_grad_(True)
    hist, rows = history(7), last_m_rows()
    out = evaluate(loss, phi, policy, theta, state, hist, rows)
    pi = policy.dist(theta, hist.obs)
    logp = policy.log_prob(pi, hist.act_raw).gather(1, rows)
    with torch.no_grad():
        mem = torch.tanh(state["mem_w"] + state["mem_b"]).expand(K, hist.obs.shape[1], -1)
        x = torch.cat([hist.obs, hist.act, hist.done.unsqueeze(-1), mem,
                       hist.reward.unsqueeze(-1), hist.signal, hist.progress.unsqueeze(-1)],
                      -1)  # fmt: skip
        free_form = EPGLoss(strides=(4, 2)).row_size(CTX)  # with π(·|s), without t/U
        assert x.shape[-1] == loss.row_size(CTX) == free_form - CTX.dist_dim + 1
        weight = torch.stack([torch.stack([reference_epg_loss(
            loss, phi[k], x[k, j - N + 1 : j + 1], x[k, j]) for j in rows[k].tolist()])
            for k in range(K)])  # fmt: skip
    torch.testing.assert_close(out, -weight * logp, rtol=1e-4, atol=1e-5)
    assert weight.std() > 0  # Â differs across steps: the data reach it
    params = [theta["pi_w0"], state["mem_w"], state["mem_b"]]
    grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
    (expected,) = torch.autograd.grad((-weight * logp).sum(), theta["pi_w0"])
    torch.testing.assert_close(grads[0], expected, rtol=1e-4, atol=1e-6)
    assert grads[1] is None and grads[2] is None
    with pytest.raises(ValueError, match="use_logprob"):
        EPGLoss(learned_advantage=True, use_logprob=True)


def test_lookahead_advantage_reads_the_rows_after_its_step():
    """With ``lookahead`` Â of step j is Figure 2's network on rows j … j + N − 1, zeros past
    the buffer's last row: the rewards after an action reach its weight, those before do not."""
    loss = EPGLoss(strides=(4, 2), learned_advantage=True, use_progress=True, lookahead=True)
    phi, policy, theta, state = learned(loss)
    hist, rows = history(7), last_m_rows()
    out = evaluate(loss, phi, policy, theta, state, hist, rows)
    logp = policy.log_prob(policy.dist(theta, hist.obs), hist.act_raw).gather(1, rows)
    t = hist.obs.shape[1]
    mem = torch.tanh(state["mem_w"] + state["mem_b"]).expand(K, t + N - 1, -1).detach()

    def rows_of(pad: int) -> torch.Tensor:  # the memory is a constant, in the padding too
        data = [hist.obs, hist.act, hist.done.unsqueeze(-1)]
        rest = [hist.reward.unsqueeze(-1), hist.signal, hist.progress.unsqueeze(-1)]
        data, rest = ([F.pad(c, (0, 0, 0, pad)) for c in cols] for cols in (data, rest))
        return torch.cat([*data, mem[:, : t + pad], *rest], -1)

    x, padded = rows_of(0), rows_of(N - 1)
    weight = torch.stack([torch.stack([reference_epg_loss(
        loss, phi[k], padded[k, j : j + N], x[k, j]) for j in rows[k].tolist()])
        for k in range(K)])  # fmt: skip
    torch.testing.assert_close(out, -weight * logp, rtol=1e-4, atol=1e-5)

    def with_reward(reward: torch.Tensor) -> torch.Tensor:
        changed = dataclasses.replace(hist, reward=reward)
        return evaluate(loss, phi, policy, theta, state, changed, rows)

    first = int(rows.min())
    earlier, later = hist.reward.clone(), hist.reward.clone()
    earlier[:, :first] += 1.0  # rows before every step of the minibatch
    later[:, first + 1 :] += 1.0  # rows after the earliest step
    torch.testing.assert_close(with_reward(earlier), out, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(with_reward(later)[rows == first], out[rows == first])
    with pytest.raises(ValueError, match="lookahead needs learned_advantage"):
        EPGLoss(lookahead=True)


def test_zero_head_starts_the_loss_at_zero_and_keeps_the_rest_of_phi():
    """The initial φ's loss is 0 at every step; φ's other parts are the usual draw."""
    plain = EPGLoss(strides=(4, 2), learned_advantage=True)
    zero = dataclasses.replace(plain, zero_head=True)
    a, b = (
        plain.init_phi(CTX, np.random.default_rng(3)),
        zero.init_phi(CTX, np.random.default_rng(3)),
    )
    sizes = {name: math.prod(shape) for name, shape in zero.shapes(CTX).items()}
    start = sum(list(sizes.values())[: list(sizes).index("head2_w")])
    head = b[start : start + sizes["head2_w"]]
    assert (head == 0).all() and (a != b).sum() == head.size > 0
    phi, policy, theta, state = learned(zero)
    out = evaluate(zero, phi, policy, theta, state, history(7), last_m_rows())
    assert (out == 0).all()


def test_epg_loss_reuses_its_per_update_part_and_still_differentiates_phi():
    loss, phi, policy, theta, state = setup("EPGLoss")
    hist = history()
    pi = policy.dist(theta, hist.obs)
    logp = policy.log_prob(pi, hist.act_raw)
    rows = last_m_rows()
    update = Update(CTX, phi, state, hist)
    with torch.no_grad():
        shared = loss.prepare(update)
    first = loss(update.batch(pi, logp, rows), shared)
    again = loss(update.batch(pi, logp, rows), shared)  # the update's next minibatch
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    # A caller differentiating with respect to φ prepares with gradients: a graph through
    # every part of φ, the reused part included.
    phi_g = phi.clone().requires_grad_(True)
    update_g = Update(CTX, phi_g, state, hist)
    out = loss(update_g.batch(pi.detach(), logp.detach(), rows), loss.prepare(update_g))
    torch.testing.assert_close(out, first, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), phi_g)
    shapes = loss.shapes(CTX)
    assert torch.all(grad[:, : math.prod(shapes["conv1_w"])].abs().sum(1) > 0)
