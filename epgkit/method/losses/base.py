"""What every loss shares: the context it is built for, the history it reads, the interface."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from epgkit.method.dims import Dims
from epgkit.method.policies import Params


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
        progress: How far the inner loop's lifetime had gone at each row, t / U (K, T); None
            where the caller does not track it.
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
    progress: torch.Tensor | None = None


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

    def resolve(self, dims: Dims) -> Loss:
        """The loss with every input that defaults to the env's declaration (reward, task
        signal) fixed to what ``dims`` declares, so a loss keeps its inputs when tested on
        another env.

        Optional: a loss without it is used unchanged.
        """
        return self

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
