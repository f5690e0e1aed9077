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
from epgkit.policies import Params, init_mlp, linear, mlp
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
    #: Optional: a loss that never reads ``logp`` may set this False; it then gets None.
    needs_logp: bool = True

    def phi_size(self, ctx: LossContext) -> int:
        """Dimension of the evolved parameters φ (0 for hand-designed losses)."""

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        """An initial φ of shape (P,)."""

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        """Parameters the inner loop trains besides θ (memory unit, value net), (K, ...)."""

    def begin_update(self, ctx: LossContext, state: Params, hist: History) -> Params:
        """Per-update quantities computed once without gradients (advantages, ...).

        The returned dict is passed to every minibatch call of the update; a loss may also
        cache in it, on its first call, what does not change during the update.
        """

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

    @property
    def needs_logp(self) -> bool:
        """log π(a|s) is a row feature only with ``use_logprob``."""
        return self.use_logprob

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

    def _layout(self, ctx: LossContext) -> tuple[list[int], list[int], list[int]]:
        """Feature indices of a row that are data (fixed during an update), memory, and
        policy-dependent (π(·|s) [, log π]), in the order of ``row_size``'s layout.
        """
        reward, signal = self._inputs(ctx)
        d = ctx.dims
        data = list(range(d.obs_dim + d.act_dim + 1))  # s, a, d
        mem = list(range(len(data), len(data) + self.memory_dim))
        start = mem[-1] + 1 if mem else len(data)
        policy = list(range(start, start + ctx.dist_dim))
        rest = start + ctx.dist_dim
        extra = int(reward) + (d.signal_dim if signal else 0)
        data += list(range(rest, rest + extra))  # r, task signal
        if self.use_logprob:
            policy.append(rest + extra)
        return data, mem, policy

    def _data_columns(self, ctx: LossContext, hist: History) -> torch.Tensor:
        reward, signal = self._inputs(ctx)
        cols = [hist.obs, hist.act, hist.done.unsqueeze(-1)]
        if reward:
            cols.append(hist.reward.unsqueeze(-1))
        if signal:
            cols.append(hist.signal)
        return torch.cat(cols, dim=-1)

    def _fixed(self, ctx: LossContext, p: Params, hist: History) -> Params:
        """What an update's minibatches share: the data columns' share of conv 1 and of the
        head's first layer, and φ's weights rearranged for the per-minibatch part.

        Every row feature is a linear input of conv 1 and of the head, so the shares add up:
        the data columns (s, a, d, r, signal) do not change during an update and are convolved
        once; the memory is the same vector at every row, so its conv 1 share is one matrix
        product with the kernel's taps summed; only π(·|s) (and log π) must be convolved again
        after each Adam step. The per-minibatch convolutions are grouped ``conv1d`` calls,
        one group per inner loop, channels first (1, K·channels, rows).
        """
        data, mem, policy = self._layout(ctx)
        k = hist.done.shape[0]
        (k1, k2), (c1, c2) = self.kernels, self.channels
        f = self.row_size(ctx)
        # φ's conv 1 weight is (tap·F + feature, channel); conv1d wants (channel, feature, tap).
        w1 = p["conv1_w"].reshape(k, k1, f, c1).permute(0, 3, 2, 1)  # (K, c1, F, k1)
        x = self._data_columns(ctx, hist)  # (K, T, F_data)
        # The data share as one matrix product over every window (taps·features by rows):
        # faster here than a grouped conv1d with 15 input channels, and no JIT on first use.
        windows = x.unfold(1, k1, 1).permute(0, 3, 2, 1).reshape(k, k1 * len(data), -1)
        w1_data = w1[:, :, data].permute(0, 1, 3, 2).reshape(k, c1, k1 * len(data))
        head = p["head1_w"]  # (K, F + context, hidden)
        context = list(range(f, f + self.context_dim))
        conv1 = torch.baddbmm(p["conv1_b"].transpose(1, 2), w1_data, windows)  # (K, c1, T')
        return {
            "conv1": conv1.reshape(1, k * c1, -1),
            "conv1_policy_w": w1[:, :, policy].reshape(k * c1, len(policy), k1),
            "conv1_mem_w": w1[:, :, mem].sum(-1).transpose(1, 2),  # (K, memory, c1)
            "conv2_cf_w": p["conv2_w"].reshape(k, k2, c1, c2).permute(0, 3, 2, 1).flatten(0, 1),
            "conv2_cf_b": p["conv2_b"].reshape(-1),
            "head1": torch.baddbmm(p["head1_b"], x, head[:, data]),
            "head1_rest_w": head[:, policy + mem + context],
        }

    def begin_update(self, ctx: LossContext, state: Params, hist: History) -> Params:
        return {}

    def __call__(
        self,
        ctx: LossContext,
        phi: torch.Tensor,
        state: Params,
        hist: History,
        pi: torch.Tensor,
        logp: torch.Tensor | None,
        rows: torch.Tensor,
        prep: Params,
    ) -> torch.Tensor:
        fixed = prep.get("_epg_fixed")
        if fixed is None:
            p = _split(phi, self.shapes(ctx))
            fixed = {**p, **self._fixed(ctx, p, hist)}
            # The next minibatches of this update reuse it, unless a caller differentiates
            # with respect to φ or the data (then every call must build its own graph).
            if not (phi.requires_grad or hist.obs.requires_grad or hist.act.requires_grad):
                prep["_epg_fixed"] = fixed
        p = fixed  # φ's parts and the update's shared part
        k, b = rows.shape
        (s1, s2), (c1, c2) = self.strides, self.channels
        _, n2 = self.conv_lengths(ctx)
        mem = torch.tanh(state["mem_w"] + state["mem_b"])  # (K, 1, memory_dim)
        dyn = torch.cat([pi, logp.unsqueeze(-1)], -1) if self.use_logprob else pi

        # Conv 1 at every row offset: the data share + π's share + the memory's constant share.
        dyn_cf = dyn.transpose(1, 2).reshape(1, -1, dyn.shape[1])
        h1 = F.conv1d(dyn_cf, p["conv1_policy_w"], groups=k) + p["conv1"]
        h1 = F.leaky_relu(h1 + torch.bmm(mem, p["conv1_mem_w"]).reshape(1, k * c1, 1))
        # Conv 2 at every offset of h1, dilated by s1: the window of a step starting at row
        # `start` reads it at start + s1·s2·i, i < n2 — exactly the two strided convolutions
        # over the N rows ending at that step, computed once for all steps of the minibatch.
        h2 = F.conv1d(h1, p["conv2_cf_w"], p["conv2_cf_b"], dilation=s1, groups=k)
        h2 = F.leaky_relu(h2).reshape(k, c2, -1)
        starts = rows - ctx.buffer_size + 1  # first row of each step's window
        pos = starts.unsqueeze(-1) + (s1 * s2) * torch.arange(n2)  # (K, B, n2)
        g2 = h2.gather(2, pos.reshape(k, 1, b * n2).expand(-1, c2, -1))  # (K, c2, B·n2)
        g2 = g2.reshape(k, c2, b, n2).permute(0, 2, 3, 1).reshape(k, b, n2 * c2)
        context = torch.baddbmm(p["fc_b"], g2, p["fc_w"])

        # Head: [row, f_context] → dense → leaky ReLU → dense, the data share precomputed.
        dyn_rows = dyn.gather(1, rows.unsqueeze(-1).expand(-1, -1, dyn.shape[-1]))
        head_in = torch.cat([dyn_rows, mem.expand(k, b, -1), context], -1)
        fixed_rows = p["head1"].gather(1, rows.unsqueeze(-1).expand(-1, -1, self.hidden))
        h = F.leaky_relu(torch.baddbmm(fixed_rows, head_in, p["head1_rest_w"]))
        return linear(h, p["head2_w"], p["head2_b"]).squeeze(-1)


def _value_net_state(ctx: LossContext, hidden: tuple[int, ...], rngs) -> Params:
    return init_mlp((ctx.dims.obs_dim, *hidden, 1), rngs, "v_", 1.0)


def gae(
    reward: torch.Tensor, value: torch.Tensor, done: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Generalized advantage estimates for (K, M) rewards; ``value`` is (K, M + 1).

    No gradient flows through the result (it is a target).
    """
    live = 1.0 - done
    delta = reward + gamma * value[:, 1:] * live - value[:, :-1]
    return torch.from_numpy(_discounted_sums(delta, gamma * lam * live))


def _discounted_sums(x: torch.Tensor, decay: torch.Tensor) -> np.ndarray:
    """y_i = x_i + decay_i · y_(i+1) along dim 1, backwards from y_M = 0.

    The recursion runs in NumPy: M steps of torch ops on (K,) tensors would cost more than
    the rest of an update's bookkeeping.
    """
    x_np, decay_np = x.detach().numpy(), decay.detach().numpy()
    out = np.empty_like(x_np)
    last = np.zeros_like(x_np[:, 0])
    for i in range(x_np.shape[1] - 1, -1, -1):
        last = x_np[:, i] + decay_np[:, i] * last
        out[:, i] = last
    return out


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
        ret = torch.from_numpy(_discounted_sums(reward, self.gamma * (1.0 - done)))
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
