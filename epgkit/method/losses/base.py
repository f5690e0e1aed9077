"""What every loss shares: the context it is built for, the history it reads, the update and
minibatch it is called on (``Update``, ``Batch``), and the interface (``Loss``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from epgkit.errors import ConfigError
from epgkit.method.dims import Dims
from epgkit.method.mlp import Params


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


@dataclass(frozen=True)
class Update:
    """What a loss reads at one update, the same for every minibatch of it.

    Attributes:
        ctx: The shapes the loss is built for.
        phi: The evolved parameters, one row per inner loop (K, P).
        state: The loss's own trained tensors (``init_state``), updated in place by Adam.
        hist: The buffer, K inner loops × T rows.
    """

    ctx: LossContext
    phi: torch.Tensor
    state: Params
    hist: History

    def batch(self, pi: torch.Tensor, logp: torch.Tensor | None, rows: torch.Tensor) -> Batch:
        """The minibatch of this update at ``rows``, with π_θ as it is now."""
        return Batch(self.ctx, self.phi, self.state, self.hist, pi, logp, rows)

    @property
    def first_recent(self) -> int:
        """Index of the first of the last M rows (the steps being updated on) in the history."""
        return self.hist.done.shape[1] - self.ctx.update_every


@dataclass(frozen=True)
class Batch(Update):
    """One minibatch of an update: the update's data and π_θ under the current θ.

    Attributes:
        pi: π(·|s) at every row of the history under the current θ (K, T, dist_dim).
        logp: log π(a|s) of the taken actions under the current θ (K, T), or None for a loss
            whose ``needs_logp`` is False.
        rows: The steps of the minibatch, as row indices into the history (K, B); each is
            one of the last M rows.
    """

    pi: torch.Tensor
    logp: torch.Tensor | None
    rows: torch.Tensor

    def at_rows(self, x: torch.Tensor) -> torch.Tensor:
        """A (K, T) or (K, T, F) tensor's entries at ``rows``: (K, B) or (K, B, F)."""
        if x.dim() == 2:
            return x.gather(1, self.rows)
        return x.gather(1, self.rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    @property
    def recent(self) -> torch.Tensor:
        """``rows`` as indices into the last M rows (K, B), for per-update quantities."""
        return self.rows - self.first_recent


Prepared = TypeVar("Prepared")


class Loss(Protocol[Prepared]):
    """What the inner loop asks of a loss. Every call covers K inner loops at once.

    Required: ``needs_history``, ``phi_size``, ``init_phi`` and ``__call__``. Optional, with
    the defaults below for a loss that does not define them (the functions below apply
    them): ``needs_logp`` (True), ``resolve`` (the loss itself), ``init_state`` (no
    state) and ``prepare`` (None).
    """

    #: Whether the loss reads rows before the last M (then π is recomputed over all T rows).
    needs_history: bool
    #: A loss that never reads ``Batch.logp`` may set this False; it then gets None.
    needs_logp: bool

    def phi_size(self, ctx: LossContext) -> int:
        """Dimension of the evolved parameters φ (0 for hand-designed losses)."""
        ...

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        """An initial φ of shape (P,)."""
        ...

    def resolve(self, dims: Dims) -> Loss:
        """The loss with every input that defaults to the env's declaration (reward, task
        signal) fixed to what ``dims`` declares, so a loss keeps its inputs when tested on
        another env."""
        ...

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        """Tensors the inner loop trains besides θ (memory unit, value net), (K, ...)."""
        ...

    def prepare(self, update: Update) -> Prepared:
        """What every minibatch of ``update`` reuses (advantages, the data's share of a
        convolution), computed once per update; handed to each ``__call__``.

        The inner loop calls it without gradients. A caller that differentiates with respect
        to φ or the data calls it with gradients, so the result carries them.
        """
        ...

    def __call__(self, batch: Batch, prepared: Prepared) -> torch.Tensor:
        """Per-step losses (K, B) for the steps at ``batch.rows``."""
        ...


def check_interface(loss: Loss, who: str) -> None:
    """Refuses a loss written for the interface before ``Update`` and ``Batch`` (a
    ``begin_update`` and eight positional arguments), in one sentence saying what changed.

    Raises:
        ConfigError: The loss has ``begin_update`` and no ``prepare``.
    """
    if hasattr(loss, "begin_update") and getattr(loss, "prepare", None) is None:
        raise ConfigError(
            f"{who} is written for epgkit's old loss interface (begin_update and eight "
            "arguments); a loss is now called as loss(batch, prepared), with begin_update "
            "renamed prepare(update): see the Loss protocol in epgkit/method/losses/base.py"
        )


def init_state(
    loss: Loss, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
) -> Params:
    """``loss.init_state``, or no state for a loss without one."""
    method = getattr(loss, "init_state", None)
    return {} if method is None else method(ctx, phi, rngs)


def prepare(loss: Loss, update: Update) -> Any:
    """``loss.prepare(update)``, or None for a loss that prepares nothing."""
    method = getattr(loss, "prepare", None)
    return None if method is None else method(update)


def needs_logp(loss: Loss) -> bool:
    """Whether the loss reads log π(a|s) (a loss that does not say is given it)."""
    return bool(getattr(loss, "needs_logp", True))


def _split(phi: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> Params:
    """Views of a flat (K, P) φ as named stacked tensors (K, *shape)."""
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = phi[:, start : start + size].reshape(phi.shape[0], *shape)
        start += size
    return out
