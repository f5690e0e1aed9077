"""Losses the inner loop trains with: the paper's learned loss L_φ and the PG surrogates.

Every loss evaluates K inner loops at once, each with its own φ (a row of a (K, P) tensor),
and returns one loss per minibatch step, (K, B). ``EPGLoss`` is Section 3.3 / Figure 2:
temporal convolutions over the N-step buffer ending at each step give a context vector, and
a small dense head maps [row, context] to the step's loss. ``PPOLoss`` and
``ReinforceLoss`` have no φ (P = 0) and serve both as the guidance L_pg of Eq. (10) and as
like-for-like baselines, since they run in exactly the same inner loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from epgkit.dims import Dims
from epgkit.policies import Params, init_mlp, mlp
from epgkit.registry import register


@dataclass(frozen=True)
class LossContext:
    """What a loss is built for: the env's dims, the policy's output size, the buffer shape."""

    dims: Dims
    dist_dim: int
    buffer_size: int  # N
    update_every: int  # M


@dataclass
class History:
    """The buffer at an update: K inner loops × T = N + M − 1 rows; the last M rows are the
    steps being updated on, the earlier ones the history their N-step windows reach back to.

    Attributes:
        obs: Normalized observations, as the policy saw them (K, T, obs_dim).
        act: Actions as loss inputs: normalized (Box) or one-hot (Discrete) (K, T, act_dim).
        act_raw: The sampled actions (Box) or their indices (Discrete), for log π(a|s).
        reward: Normalized rewards (K, T).
        reward_scaled: Rewards divided by their running std, for PG returns (K, T).
        done: Termination flags (K, T).
        signal: The env's privileged task signal (K, T, signal_dim).
        logp_old: log π(a|s) when the action was taken (K, T).
        next_obs: Normalized observation after the last step, for bootstrapping (K, obs_dim).
        pi_old: π(·|s) when the action was taken (K, T, dist_dim).
    """

    obs: torch.Tensor
    act: torch.Tensor
    act_raw: torch.Tensor
    reward: torch.Tensor
    reward_scaled: torch.Tensor
    done: torch.Tensor
    signal: torch.Tensor
    logp_old: torch.Tensor
    next_obs: torch.Tensor
    pi_old: torch.Tensor


class Loss(Protocol):
    """The interface every registered loss implements."""

    #: Whether the loss reads rows before the last M (then π is recomputed over all T rows).
    needs_history: bool

    def phi_size(self, ctx: LossContext) -> int:
        """Dimension of the evolved parameters φ (0 for hand-designed losses)."""

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        """An initial φ of shape (P,)."""

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        """Parameters the inner loop trains besides θ (memory unit, value net), (K, ...)."""

    def begin_update(self, ctx: LossContext, state: Params, hist: History) -> Params:
        """Per-update quantities computed once without gradients (advantages, ...)."""

    def __call__(
        self,
        ctx: LossContext,
        phi: torch.Tensor,
        state: Params,
        hist: History,
        pi: torch.Tensor,
        logp: torch.Tensor,
        rows: torch.Tensor,
        prep: Params,
    ) -> torch.Tensor:
        """Per-step losses (K, B) for the steps at ``rows`` (K, B) of the history."""


def _split(phi: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> Params:
    """Views of a flat (K, P) φ as named stacked tensors (K, *shape)."""
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = phi[:, start : start + size].reshape(phi.shape[0], *shape)
        start += size
    return out


@register("loss")
@dataclass(frozen=True)
class EPGLoss:
    """The learned loss L_φ of Section 3.3 (Figure 2); every size is a gin parameter.

    Attributes:
        channels: Output channels of the two temporal convolutions (paper: 10, 10).
        kernels: Their kernel sizes (paper: 8, 4; reference code: 6, 4).
        strides: Their strides (paper: 7, 2; reference code: 5, 2).
        context_dim: Size of f_context, the fully connected layer after the convolutions.
        hidden: Hidden units of the per-step dense head.
        memory_dim: Units of the memory unit (a tanh layer fed a constant one).
        use_reward: Give the reward to the loss; None follows the env's family (Table 1).
        use_task_signal: Give the privileged task signal; None uses it when the env has one.
        use_logprob: Add log π(a|s) of the taken action to each row (an extension).
    """

    channels: tuple[int, int] = (10, 10)
    kernels: tuple[int, int] = (8, 4)
    strides: tuple[int, int] = (7, 2)
    context_dim: int = 32
    hidden: int = 16
    memory_dim: int = 32
    use_reward: bool | None = None
    use_task_signal: bool | None = None
    use_logprob: bool = False

    needs_history = True

    def _inputs(self, ctx: LossContext) -> tuple[bool, bool]:
        reward = ctx.dims.reward_in_loss if self.use_reward is None else self.use_reward
        signal = ctx.dims.signal_dim > 0 if self.use_task_signal is None else self.use_task_signal
        if signal and ctx.dims.signal_dim == 0:
            raise ValueError("EPGLoss.use_task_signal is True but the env has no task signal")
        return reward, signal

    def row_size(self, ctx: LossContext) -> int:
        """Features per buffer row: s, a, d, mem, π(·|s) [, r] [, task signal] [, log π]."""
        reward, signal = self._inputs(ctx)
        d = ctx.dims
        return (
            d.obs_dim
            + d.act_dim
            + 1
            + self.memory_dim
            + ctx.dist_dim
            + int(reward)
            + (d.signal_dim if signal else 0)
            + int(self.use_logprob)
        )

    def conv_lengths(self, ctx: LossContext) -> tuple[int, int]:
        """Output lengths of the two convolutions over an N-row window."""
        (k1, k2), (s1, s2) = self.kernels, self.strides
        n1 = (ctx.buffer_size - k1) // s1 + 1
        n2 = (n1 - k2) // s2 + 1
        if n1 < k2 or n2 < 1:
            raise ValueError(
                f"buffer_size {ctx.buffer_size} is too short for EPGLoss kernels "
                f"{self.kernels} and strides {self.strides}"
            )
        return n1, n2

    def shapes(self, ctx: LossContext) -> dict[str, tuple[int, ...]]:
        """The named parts of φ, in the order they are laid out in the flat vector."""
        f = self.row_size(ctx)
        (c1, c2), (k1, k2) = self.channels, self.kernels
        _, n2 = self.conv_lengths(ctx)
        return {
            "conv1_w": (k1 * f, c1), "conv1_b": (1, c1),
            "conv2_w": (k2 * c1, c2), "conv2_b": (1, 1, c2),
            "fc_w": (n2 * c2, self.context_dim), "fc_b": (1, self.context_dim),
            "head1_w": (f + self.context_dim, self.hidden), "head1_b": (1, self.hidden),
            "head2_w": (self.hidden, 1), "head2_b": (1, 1),
            "mem_w": (1, self.memory_dim), "mem_b": (1, self.memory_dim),
        }  # fmt: skip

    def phi_size(self, ctx: LossContext) -> int:
        return sum(math.prod(s) for s in self.shapes(ctx).values())

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        parts = []
        for name, shape in self.shapes(ctx).items():
            fan_in = shape[0] if name.endswith("_w") else 1
            bound = 1.0 / math.sqrt(fan_in) if name.endswith("_w") else 0.0
            parts.append(rng.uniform(-bound, bound, math.prod(shape)))
        return np.concatenate(parts).astype(np.float32)

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        # The memory unit starts where φ says and is then trained by the inner loop (Eq. 6).
        parts = _split(phi, self.shapes(ctx))
        return {"mem_w": parts["mem_w"].clone(), "mem_b": parts["mem_b"].clone()}

    def begin_update(self, ctx: LossContext, state: Params, hist: History) -> Params:
        return {}

    def __call__(
        self,
        ctx: LossContext,
        phi: torch.Tensor,
        state: Params,
        hist: History,
        pi: torch.Tensor,
        logp: torch.Tensor,
        rows: torch.Tensor,
        prep: Params,
    ) -> torch.Tensor:
        p = _split(phi, self.shapes(ctx))
        reward, signal = self._inputs(ctx)
        k, t = hist.done.shape
        mem = torch.tanh(state["mem_w"] + state["mem_b"]).expand(k, t, self.memory_dim)
        cols = [hist.obs, hist.act, hist.done.unsqueeze(-1), mem, pi]
        if reward:
            cols.append(hist.reward.unsqueeze(-1))
        if signal:
            cols.append(hist.signal)
        if self.use_logprob:
            cols.append(logp.unsqueeze(-1))
        x = torch.cat(cols, dim=-1)  # (K, T, F)

        # Conv 1 at every row offset once; each step's window then picks its own positions,
        # which gives exactly a strided convolution over the N rows ending at that step.
        (k1, k2), (s1, s2) = self.kernels, self.strides
        n1, n2 = self.conv_lengths(ctx)
        windows = x.unfold(1, k1, 1).transpose(2, 3).reshape(k, t - k1 + 1, -1)
        h1 = F.leaky_relu(torch.baddbmm(p["conv1_b"], windows, p["conv1_w"]))
        b = rows.shape[1]
        starts = rows - ctx.buffer_size + 1  # first row of each step's window
        pos = starts.unsqueeze(-1) + s1 * torch.arange(n1)  # (K, B, n1)
        g1 = h1.gather(1, pos.reshape(k, -1, 1).expand(-1, -1, h1.shape[-1]))
        g1 = g1.reshape(k, b, n1, -1)
        w2 = g1.unfold(2, k2, s2)[:, :, :n2].transpose(3, 4).reshape(k, b * n2, -1)
        h2 = F.leaky_relu(torch.bmm(w2, p["conv2_w"]).reshape(k, b, n2, -1) + p["conv2_b"])
        context = torch.baddbmm(p["fc_b"], h2.reshape(k, b, -1), p["fc_w"])

        row = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        h = F.leaky_relu(torch.baddbmm(p["head1_b"], torch.cat([row, context], -1), p["head1_w"]))
        return torch.baddbmm(p["head2_b"], h, p["head2_w"]).squeeze(-1)


def _value_net_state(ctx: LossContext, hidden: tuple[int, ...], rngs) -> Params:
    return init_mlp((ctx.dims.obs_dim, *hidden, 1), rngs, "v_", 1.0)


def gae(
    reward: torch.Tensor, value: torch.Tensor, done: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Generalized advantage estimates for (K, M) rewards; ``value`` is (K, M + 1)."""
    adv = torch.zeros_like(reward)
    last = torch.zeros_like(reward[:, 0])
    for i in range(reward.shape[1] - 1, -1, -1):
        live = 1.0 - done[:, i]
        delta = reward[:, i] + gamma * value[:, i + 1] * live - value[:, i]
        last = delta + gamma * lam * live * last
        adv[:, i] = last
    return adv


@register("loss")
@dataclass(frozen=True)
class PPOLoss:
    """PPO's clipped surrogate with GAE and a value net trained alongside (Schulman 2017).

    Termination flags cut the bootstrap; time-limit truncations count as terminations too.

    Attributes:
        clip: Ratio clipping ε.
        gamma: Discount.
        lam: GAE λ.
        value_hidden: Hidden sizes of the value net.
        value_coef: Weight of the value regression in the per-step loss.
        entropy_coef: Weight of an entropy bonus (Gaussian policies only).
        normalize_advantages: Standardize advantages over each update's M steps.
    """

    clip: float = 0.2
    gamma: float = 0.99
    lam: float = 0.95
    value_hidden: tuple[int, ...] = (64, 64)
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    normalize_advantages: bool = True

    needs_history = False

    def phi_size(self, ctx: LossContext) -> int:
        return 0

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        return _value_net_state(ctx, self.value_hidden, rngs)

    def begin_update(self, ctx: LossContext, state: Params, hist: History) -> Params:
        m = ctx.update_every
        obs = torch.cat([hist.obs[:, -m:], hist.next_obs.unsqueeze(1)], dim=1)
        value = mlp(state, "v_", obs).squeeze(-1)
        adv = gae(hist.reward_scaled[:, -m:], value, hist.done[:, -m:], self.gamma, self.lam)
        ret = adv + value[:, :-1]
        if self.normalize_advantages:
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        return {"adv": adv, "ret": ret}

    def __call__(
        self,
        ctx: LossContext,
        phi: torch.Tensor,
        state: Params,
        hist: History,
        pi: torch.Tensor,
        logp: torch.Tensor,
        rows: torch.Tensor,
        prep: Params,
    ) -> torch.Tensor:
        recent = rows - (hist.done.shape[1] - ctx.update_every)  # index into the last M
        adv = prep["adv"].gather(1, recent)
        ratio = torch.exp(logp.gather(1, rows) - hist.logp_old.gather(1, rows))
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
        obs = hist.obs.gather(1, rows.unsqueeze(-1).expand(-1, -1, hist.obs.shape[-1]))
        value = mlp(state, "v_", obs).squeeze(-1)
        loss = -surrogate + self.value_coef * (value - prep["ret"].gather(1, recent)).square()
        if self.entropy_coef and not ctx.dims.discrete:
            log_std = pi[..., ctx.dims.act_dim :].gather(
                1, rows.unsqueeze(-1).expand(-1, -1, ctx.dims.act_dim)
            )
            loss = loss - self.entropy_coef * log_std.sum(-1)
        return loss


@register("loss")
@dataclass(frozen=True)
class ReinforceLoss:
    """REINFORCE (Williams 1992): −G_t · log π(a_t|s_t), with G_t the discounted return to go
    inside the update window, standardized per update.

    Attributes:
        gamma: Discount.
    """

    gamma: float = 0.99

    needs_history = False

    def phi_size(self, ctx: LossContext) -> int:
        return 0

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        return {}

    def begin_update(self, ctx: LossContext, state: Params, hist: History) -> Params:
        m = ctx.update_every
        reward, done = hist.reward_scaled[:, -m:], hist.done[:, -m:]
        ret = torch.zeros_like(reward)
        running = torch.zeros_like(reward[:, 0])
        for i in range(m - 1, -1, -1):
            running = reward[:, i] + self.gamma * running * (1.0 - done[:, i])
            ret[:, i] = running
        ret = (ret - ret.mean(1, keepdim=True)) / (ret.std(1, keepdim=True) + 1e-8)
        return {"ret": ret}

    def __call__(
        self,
        ctx: LossContext,
        phi: torch.Tensor,
        state: Params,
        hist: History,
        pi: torch.Tensor,
        logp: torch.Tensor,
        rows: torch.Tensor,
        prep: Params,
    ) -> torch.Tensor:
        recent = rows - (hist.done.shape[1] - ctx.update_every)
        return -prep["ret"].gather(1, recent) * logp.gather(1, rows)
