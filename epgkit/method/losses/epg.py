"""The learned loss L_φ of Section 3.3 (Figure 2).

Temporal convolutions over the N-step buffer ending at each step give a context vector, and a
small dense head maps [row, context] to the step's loss. φ is one flat vector per inner loop;
``EPGLoss.shapes`` names its parts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method.dims import Dims
from epgkit.method.losses.base import Batch, History, LossContext, Update, _split
from epgkit.method.mlp import Params, linear
from epgkit.registry import register


@dataclass(frozen=True)
class Shared:
    """What the minibatches of one update share (``EPGLoss.prepare``): φ's weights laid out
    for the per-minibatch computation, channels first for the grouped convolutions (one group
    per inner loop), and the data columns' shares of conv 1 and of the head's first layer."""

    conv1: torch.Tensor  # the data's share of conv 1 plus its bias, (1, K·c1, T')
    conv1_policy_w: torch.Tensor  # conv 1's taps over π(·|s) [and log π], (K·c1, F_π, k1)
    conv1_mem_w: torch.Tensor  # conv 1's taps over the memory, summed, (K, memory, c1)
    conv2_w: torch.Tensor  # (K·c2, c1, k2)
    conv2_b: torch.Tensor  # (K·c2,)
    fc_w: torch.Tensor
    fc_b: torch.Tensor
    head1: torch.Tensor  # the data's share of the head's first layer plus its bias, (K, T, hidden)
    head1_rest_w: torch.Tensor  # its weights over π, the memory and the context
    head2_w: torch.Tensor
    head2_b: torch.Tensor


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
        use_progress: Add t / U, how far the inner loop's lifetime has gone, to each row (an
            extension after Jackson et al. 2024's temporally-aware LPO: a loss that knows the
            time left can anneal its steps, which the memory unit alone can only infer).
        learned_advantage: Make the step's loss −Â·log π(a|s), where Â is the network's output
            from rows without π(·|s) and with the memory held at φ's value: a learned
            advantage (an extension). Every φ is then a policy gradient and the ES searches
            only for what to reinforce, a smaller search than Figure 2's free form, which
            must also discover how to move π.
        lookahead: With ``learned_advantage``, Â of a step reads the N rows from that step
            on (the rest of the update's M steps, zeros past the last) instead of the N
            rows up to it: the rewards that follow an action, as a return or GAE does. Â
            from the rows up to a step sees no reward its action led to but the immediate
            one (an extension; docs/results.md §3.8).
        zero_head: Start the head's last layer at zero, so that the initial φ's loss (Â with
            ``learned_advantage``) is 0 and each antithetic pair of perturbations starts as a
            pair of opposite gradients, instead of a random loss's own drift (an extension).
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
    use_progress: bool = False
    learned_advantage: bool = False
    lookahead: bool = False
    zero_head: bool = False

    needs_history = True

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        sizes = {"channels": self.channels, "kernels": self.kernels, "strides": self.strides,
                 "context_dim": (self.context_dim,), "hidden": (self.hidden,)}  # fmt: skip
        problems = [f"EPGLoss.{name} must be ≥ 1, got {getattr(self, name)}"
                    for name, values in sizes.items() if min(values) < 1]  # fmt: skip
        if self.memory_dim < 0:
            problems.append(f"EPGLoss.memory_dim must be ≥ 0, got {self.memory_dim}")
        if self.learned_advantage and self.use_logprob:
            problems.append(
                "EPGLoss.learned_advantage computes Â without π, so it cannot take "
                "use_logprob = True (log π as an input of Â)"
            )
        if self.lookahead and not self.learned_advantage:
            problems.append(
                "EPGLoss.lookahead needs learned_advantage = True (in the free form a step's "
                "loss already reaches the π of the steps before it)"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def needs_logp(self) -> bool:
        """log π(a|s) is read with ``use_logprob`` (a row feature) or ``learned_advantage``."""
        return self.use_logprob or self.learned_advantage

    def resolve(self, dims: Dims) -> EPGLoss:
        """This loss with ``use_reward`` and ``use_task_signal`` fixed where they are None: the
        reward as the env's family declares (Table 1), the task signal if the env has one."""
        changes: dict[str, bool] = {}
        if self.use_reward is None:
            changes["use_reward"] = dims.reward_in_loss
        if self.use_task_signal is None:
            changes["use_task_signal"] = dims.signal_dim > 0
        return dataclasses.replace(self, **changes) if changes else self

    def _inputs(self, ctx: LossContext) -> tuple[bool, bool]:
        resolved = self.resolve(ctx.dims)  # the one place where None follows the env
        reward, signal = resolved.use_reward, resolved.use_task_signal
        if signal and ctx.dims.signal_dim == 0:
            raise ConfigError(
                "EPGLoss.use_task_signal = True, but the env has no task signal (only task "
                "families that declare one do); allowed here: None (use it where there is one) "
                "or False"
            )
        return reward, signal

    def row_size(self, ctx: LossContext) -> int:
        """Features per buffer row: s, a, d, mem, π(·|s) (not with ``learned_advantage``)
        [, r] [, task signal] [, t/U] [, log π]."""
        reward, signal = self._inputs(ctx)
        d = ctx.dims
        return (
            d.obs_dim
            + d.act_dim
            + 1
            + self.memory_dim
            + self._policy_columns(ctx)
            + int(reward)
            + (d.signal_dim if signal else 0)
            + int(self.use_progress)
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
            part = rng.uniform(-bound, bound, math.prod(shape))
            # Drawn and then zeroed, so that zero_head leaves the other parts as they were.
            parts.append(0.0 * part if self.zero_head and name == "head2_w" else part)
        return np.concatenate(parts).astype(np.float32)

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        # The memory unit starts where φ says and is then trained by the inner loop (Eq. 6).
        parts = _split(phi, self.shapes(ctx))
        return {"mem_w": parts["mem_w"].clone(), "mem_b": parts["mem_b"].clone()}

    def _policy_columns(self, ctx: LossContext) -> int:
        return 0 if self.learned_advantage else ctx.dist_dim

    def _layout(self, ctx: LossContext) -> tuple[list[int], list[int], list[int]]:
        """Feature indices of a row that are data (fixed during an update), memory, and
        policy-dependent (π(·|s) [, log π]), in the order of ``row_size``'s layout.
        """
        reward, signal = self._inputs(ctx)
        d = ctx.dims
        data = list(range(d.obs_dim + d.act_dim + 1))  # s, a, d
        mem = list(range(len(data), len(data) + self.memory_dim))
        start = mem[-1] + 1 if mem else len(data)
        policy = list(range(start, start + self._policy_columns(ctx)))
        rest = start + len(policy)
        extra = int(reward) + (d.signal_dim if signal else 0) + int(self.use_progress)
        data += list(range(rest, rest + extra))  # r, task signal, t/U
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
        if self.use_progress:
            if hist.progress is None:
                raise ValueError("EPGLoss.use_progress needs a history that records t / U")
            cols.append(hist.progress.unsqueeze(-1))
        return torch.cat(cols, dim=-1)

    def prepare(self, update: Update) -> Shared:
        """What an update's minibatches share: the data columns' share of conv 1 and of the
        head's first layer, and φ's weights rearranged for the per-minibatch part.

        Every row feature is a linear input of conv 1 and of the head, so the shares add up:
        the data columns (s, a, d, r, signal) do not change during an update and are convolved
        once; the memory is the same vector at every row, so its conv 1 share is one matrix
        product with the kernel's taps summed; only π(·|s) (and log π) must be convolved again
        after each Adam step. The per-minibatch convolutions are grouped ``conv1d`` calls,
        one group per inner loop, channels first (1, K·channels, rows).
        """
        ctx, hist = update.ctx, update.hist
        p = _split(update.phi, self.shapes(ctx))
        data, mem, policy = self._layout(ctx)
        k = hist.done.shape[0]
        (k1, k2), (c1, c2) = self.kernels, self.channels
        f = self.row_size(ctx)
        # φ's conv 1 weight is (tap·F + feature, channel); conv1d wants (channel, feature, tap).
        w1 = p["conv1_w"].reshape(k, k1, f, c1).permute(0, 3, 2, 1)  # (K, c1, F, k1)
        x = self._data_columns(ctx, hist)  # (K, T, F_data)
        # Lookahead windows start at their step and run N rows on, past the buffer's end.
        x_conv = F.pad(x, (0, 0, 0, ctx.buffer_size - 1)) if self.lookahead else x
        # The data share as one matrix product over every window (taps·features by rows):
        # faster here than a grouped conv1d with 15 input channels, and no JIT on first use.
        windows = x_conv.unfold(1, k1, 1).permute(0, 3, 2, 1).reshape(k, k1 * len(data), -1)
        w1_data = w1[:, :, data].permute(0, 1, 3, 2).reshape(k, c1, k1 * len(data))
        head = p["head1_w"]  # (K, F + context, hidden)
        context = list(range(f, f + self.context_dim))
        conv1 = torch.baddbmm(p["conv1_b"].transpose(1, 2), w1_data, windows)  # (K, c1, T')
        return Shared(
            conv1=conv1.reshape(1, k * c1, -1),
            conv1_policy_w=w1[:, :, policy].reshape(k * c1, len(policy), k1),
            conv1_mem_w=w1[:, :, mem].sum(-1).transpose(1, 2),  # (K, memory, c1)
            conv2_w=p["conv2_w"].reshape(k, k2, c1, c2).permute(0, 3, 2, 1).flatten(0, 1),
            conv2_b=p["conv2_b"].reshape(-1),
            fc_w=p["fc_w"],
            fc_b=p["fc_b"],
            head1=torch.baddbmm(p["head1_b"], x, head[:, data]),
            head1_rest_w=head[:, policy + mem + context],
            head2_w=p["head2_w"],
            head2_b=p["head2_b"],
        )

    def __call__(self, batch: Batch, p: Shared) -> torch.Tensor:
        ctx, pi, rows, state = batch.ctx, batch.pi, batch.rows, batch.state
        k, b = rows.shape
        (s1, s2), (c1, c2) = self.strides, self.channels
        _, n2 = self.conv_lengths(ctx)
        mem = torch.tanh(state["mem_w"] + state["mem_b"])  # (K, 1, memory_dim)
        if self.learned_advantage:
            dyn = pi.new_zeros((*pi.shape[:2], 0))  # Â reads no π, not even a slice of it
            # Nor what the inner loop trains: a step must move π, not Â, so the memory
            # stays at φ's value (Adam leaves a parameter with zero gradient unchanged).
            mem = mem.detach()
        elif self.use_logprob:
            dyn = torch.cat([pi, batch.logp.unsqueeze(-1)], -1)
        else:
            dyn = pi

        # Conv 1 at every row offset: the data share + π's share + the memory's constant share.
        h1 = p.conv1
        if dyn.shape[-1]:
            dyn_cf = dyn.transpose(1, 2).reshape(1, -1, dyn.shape[1])
            h1 = F.conv1d(dyn_cf, p.conv1_policy_w, groups=k) + h1
        h1 = F.leaky_relu(h1 + torch.bmm(mem, p.conv1_mem_w).reshape(1, k * c1, 1))
        # Conv 2 at every offset of h1, dilated by s1: the window of a step starting at row
        # `start` reads it at start + s1·s2·i, i < n2 — exactly the two strided convolutions
        # over the N rows of that step's window, computed once for all steps of the minibatch.
        h2 = F.conv1d(h1, p.conv2_w, p.conv2_b, dilation=s1, groups=k)
        h2 = F.leaky_relu(h2).reshape(k, c2, -1)
        starts = rows if self.lookahead else rows - ctx.buffer_size + 1  # each window's first row
        pos = starts.unsqueeze(-1) + (s1 * s2) * torch.arange(n2)  # (K, B, n2)
        g2 = h2.gather(2, pos.reshape(k, 1, b * n2).expand(-1, c2, -1))  # (K, c2, B·n2)
        g2 = g2.reshape(k, c2, b, n2).permute(0, 2, 3, 1).reshape(k, b, n2 * c2)
        context = torch.baddbmm(p.fc_b, g2, p.fc_w)

        # Head: [row, f_context] → dense → leaky ReLU → dense, the data share precomputed.
        dyn_rows = batch.at_rows(dyn)
        head_in = torch.cat([dyn_rows, mem.expand(k, b, -1), context], -1)
        h = F.leaky_relu(torch.baddbmm(batch.at_rows(p.head1), head_in, p.head1_rest_w))
        out = linear(h, p.head2_w, p.head2_b).squeeze(-1)
        if self.learned_advantage:
            return -out * batch.at_rows(batch.logp)
        return out
