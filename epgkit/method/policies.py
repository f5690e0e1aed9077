"""Policies π_θ as stacked weights (``epgkit.method.mlp``): what the inner loop asks of a policy
(``Policy``) and the paper's two (Section 3.3: an MLP with 2 hidden layers of 64 tanh units; a
Gaussian with a learnable, state-independent log-std for Box actions, a categorical for
Discrete actions).

Each policy declares the action space it acts in; ``default_policy`` is the one an env gets
when the config names none. Depth, width and activation are the policies' gin parameters, so
that a loss evolved with one architecture can train another at test time (Figure 17: 2 × 256
tanh, 2 × 64 ReLU, 4 × 64 tanh).

Two paths compute the same π_θ: torch (``dist`` and friends) where the loss needs gradients,
and NumPy (``act``) for the one observation per inner loop of every environment step, where
torch's per-call overhead would cost more than the arithmetic. The NumPy path reads views of
the torch parameters, so it always sees the weights the inner loop's optimizer just updated.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from epgkit.method import checks
from epgkit.method.dims import Dims
from epgkit.method.mlp import (  # noqa: F401  (Params, ArrayParams, ACTIVATIONS: public names)
    ACTIVATIONS,
    ArrayParams,
    Params,
    check_architecture,
    init_mlp,
    mlp,
    mlp_numpy,
)
from epgkit.registry import index, register

_LOG_2PI = math.log(2 * math.pi)


class Policy(Protocol):
    """What the inner loop asks of a policy: K stacked parameter sets θ, π(·|s) as a tensor
    (the loss's input), sampling from given noise, and the NumPy ``act`` of one step.

    ``discrete`` says which action space it acts in (``Dims.discrete``). Every method works on
    stacked tensors: θ's entries are (K, ...), observations (K, T, obs_dim).
    """

    discrete: ClassVar[bool]

    def dist_dim(self, dims: Dims) -> int:
        """Size of π(·|s) as a loss input."""
        ...

    def init(self, dims: Dims, rngs: Sequence[np.random.Generator]) -> Params:
        """Fresh θ for len(rngs) inner loops, each slice drawn from its own generator."""
        ...

    def dist(self, theta: Params, obs: torch.Tensor) -> torch.Tensor:
        """π(·|s) for obs (K, T, obs_dim): (K, T, dist_dim)."""
        ...

    def sample(self, dist: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions from ``dist`` given noise from ``draw_noise``."""
        ...

    def mode(self, dist: torch.Tensor) -> torch.Tensor:
        """The most likely action."""
        ...

    def log_prob(self, dist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s), shape dist.shape[:-1]."""
        ...

    def kl(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) between two batches of distributions."""
        ...

    def draw_noise(self, rng: np.random.Generator, steps: int, dims: Dims) -> np.ndarray:
        """The random numbers ``steps`` actions draw, (steps, ...)."""
        ...


#: π(·|s), a (the most likely action when the noise is None) and log π(a|s) for one
#: normalized observation per inner loop, obs (K, obs_dim).
Actor = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray, np.ndarray]]


def actor(policy: Policy, theta: Params, theta_np: ArrayParams) -> Actor:
    """How the inner loop acts with ``policy``: its NumPy ``act`` on ``theta_np`` when it has
    one (the built-in ones do; views of θ, so it acts with the weights Adam just updated), else
    its torch methods on ``theta``, one call per step."""
    numpy_act = getattr(policy, "act", None)
    if numpy_act is not None:
        return functools.partial(numpy_act, theta_np)

    def torch_act(obs: np.ndarray, noise: np.ndarray | None) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            dist = policy.dist(theta, torch.from_numpy(obs).unsqueeze(1))
            if noise is None:
                action = policy.mode(dist)
            else:
                action = policy.sample(dist, torch.from_numpy(noise).unsqueeze(1))
            logp = policy.log_prob(dist, action)
        return dist[:, 0].numpy(), action[:, 0].numpy(), logp[:, 0].numpy()

    return torch_act  # type: ignore[return-value]


@register("policy")
@dataclass(frozen=True)
class GaussianMLP:
    """Diagonal Gaussian over Box actions; the mean is an MLP, the log-std a free vector.

    Attributes:
        hidden: Hidden layer sizes (depth and width).
        init_log_std: Initial log standard deviation of every action dimension.
        activation: Activation of the hidden layers, a name in ``ACTIVATIONS``.
    """

    hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = 0.0
    activation: str = "tanh"

    def __post_init__(self) -> None:
        checks.check(self)  # first: the check below compares numbers
        check_architecture("GaussianMLP", self.hidden, self.activation)

    #: The action space it acts in: Box (False) or Discrete (True), as ``Dims.discrete``.
    discrete: ClassVar[bool] = False

    def dist_dim(self, dims: Dims) -> int:
        """Size of π(·|s) as a loss input: the mean and the log-std."""
        return 2 * dims.act_dim

    def init(self, dims: Dims, rngs: Sequence[np.random.Generator]) -> Params:
        """Fresh θ for len(rngs) inner loops."""
        params = init_mlp((dims.obs_dim, *self.hidden, dims.act_dim), rngs, "pi_", 0.01)
        params["log_std"] = torch.full((len(rngs), 1, dims.act_dim), float(self.init_log_std))
        return params

    def dist(self, theta: Params, obs: torch.Tensor) -> torch.Tensor:
        """π(·|s) for obs (K, T, obs_dim): (K, T, 2·act_dim), the mean then the log-std."""
        mean = mlp(theta, "pi_", obs, self.activation)
        return torch.cat([mean, theta["log_std"].expand_as(mean)], dim=-1)

    def sample(self, dist: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions from ``dist`` given standard-normal ``noise`` of the action's shape."""
        mean, log_std = dist.chunk(2, dim=-1)
        return mean + log_std.exp() * noise

    def mode(self, dist: torch.Tensor) -> torch.Tensor:
        """The most likely action."""
        return dist.chunk(2, dim=-1)[0]

    def log_prob(self, dist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s), shape dist.shape[:-1]."""
        mean, log_std = dist.chunk(2, dim=-1)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) between two batches of distributions."""
        mp, lp = p.chunk(2, dim=-1)
        mq, lq = q.chunk(2, dim=-1)
        return (
            lq - lp + (torch.exp(2 * lp) + (mp - mq).square()) / (2 * torch.exp(2 * lq)) - 0.5
        ).sum(-1)

    def draw_noise(self, rng: np.random.Generator, steps: int, dims: Dims) -> np.ndarray:
        """The standard-normal numbers ``steps`` actions draw, (steps, act_dim)."""
        return rng.standard_normal((steps, dims.act_dim), dtype=np.float32)

    def act(
        self, theta: ArrayParams, obs: np.ndarray, noise: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dist``, ``sample`` (``mode`` when noise is None) and ``log_prob`` in NumPy for one
        observation per inner loop, obs (K, obs_dim): returns π(·|s), a and log π(a|s).
        """
        mean = mlp_numpy(theta, "pi_", obs, self.activation)
        log_std = theta["log_std"][:, 0]
        dist = np.concatenate([mean, log_std], axis=-1)
        # (a − mean) / std is the noise itself, so log π(a|s) needs no division.
        logp = log_std.sum(-1) + 0.5 * _LOG_2PI * log_std.shape[-1]
        if noise is None:
            return dist, mean, -logp
        logp += 0.5 * np.square(noise).sum(-1)
        return dist, mean + np.exp(log_std) * noise, -logp


@register("policy")
@dataclass(frozen=True)
class CategoricalMLP:
    """Categorical over Discrete actions; π(·|s) given to the loss as probabilities.

    Attributes:
        hidden: Hidden layer sizes (depth and width).
        activation: Activation of the hidden layers, a name in ``ACTIVATIONS``.
    """

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        checks.check(self)  # first: the check below compares numbers
        check_architecture("CategoricalMLP", self.hidden, self.activation)

    discrete: ClassVar[bool] = True

    def dist_dim(self, dims: Dims) -> int:
        """Size of π(·|s) as a loss input: one probability per action."""
        return dims.act_dim

    def init(self, dims: Dims, rngs: Sequence[np.random.Generator]) -> Params:
        """Fresh θ for len(rngs) inner loops."""
        return init_mlp((dims.obs_dim, *self.hidden, dims.act_dim), rngs, "pi_", 0.01)

    def dist(self, theta: Params, obs: torch.Tensor) -> torch.Tensor:
        """π(·|s) as probabilities, (K, T, n_actions)."""
        return torch.softmax(mlp(theta, "pi_", obs, self.activation), dim=-1)

    def sample(self, dist: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling with one uniform number per action; returns float indices."""
        cdf = dist.cumsum(-1)
        idx = (cdf < noise[..., :1]).sum(-1, keepdim=True)
        return idx.clamp(max=dist.shape[-1] - 1).to(dist.dtype)

    def mode(self, dist: torch.Tensor) -> torch.Tensor:
        """The most likely action index, as a float of shape (..., 1)."""
        return dist.argmax(-1, keepdim=True).to(dist.dtype)

    def log_prob(self, dist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s) for float action indices of shape (..., 1)."""
        picked = dist.gather(-1, actions.long()).squeeze(-1)
        return torch.log(picked.clamp_min(1e-8))

    def kl(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) between two batches of categoricals."""
        return (p * (torch.log(p.clamp_min(1e-8)) - torch.log(q.clamp_min(1e-8)))).sum(-1)

    def draw_noise(self, rng: np.random.Generator, steps: int, dims: Dims) -> np.ndarray:
        """The uniform numbers ``steps`` actions draw, (steps, 1)."""
        return rng.random((steps, 1), dtype=np.float32)

    def act(
        self, theta: ArrayParams, obs: np.ndarray, noise: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``dist``, ``sample`` (``mode`` when noise is None) and ``log_prob`` in NumPy for one
        observation per inner loop, obs (K, obs_dim): returns π(·|s), a and log π(a|s).
        """
        logits = mlp_numpy(theta, "pi_", obs, self.activation)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        if noise is None:
            idx = probs.argmax(-1)[:, None]
        else:
            idx = (probs.cumsum(-1) < noise[:, :1]).sum(-1, keepdims=True)
            np.minimum(idx, probs.shape[-1] - 1, out=idx)
        picked = np.take_along_axis(probs, idx, -1)[:, 0]
        logp = np.log(np.maximum(picked, 1e-8))
        return probs, idx.astype(np.float32), logp


def default_policy(dims: Dims) -> type:
    """The policy an env gets when the config names none (``InnerLoop.policy = None``): the
    paper's Gaussian for Box actions, a categorical for Discrete ones (Section 3.3)."""
    return CategoricalMLP if dims.discrete else GaussianMLP


def fitting(dims: Dims) -> list[str]:
    """Names of the registered policies that declare they act in the action space of ``dims``."""
    return [name for name, cls in index("policy").items()
            if getattr(cls, "discrete", None) == dims.discrete]  # fmt: skip
