"""Policies π_θ as stacked weights: K independent MLPs evaluated in one batched matmul a layer.

Every parameter carries a leading dimension K (one slice per inner loop running in lockstep),
so acting and the loss's gradient for all K inner loops cost one batched product per layer
(Section 3.3: an MLP with 2 hidden layers of 64 tanh units; a Gaussian with a learnable,
state-independent log-std for Box actions, a categorical for Discrete actions). Each policy
declares the action space it acts in; ``default_policy`` is the one an env gets when the
config names none. Depth, width and activation are the policies' gin parameters, so that a
loss evolved with one architecture can train another at test time (Figure 17: 2 × 256 tanh,
2 × 64 ReLU, 4 × 64 tanh).

Two paths compute the same π_θ: torch (``dist`` and friends) where the loss needs gradients,
and NumPy (``act``) for the one observation per inner loop of every environment step, where
torch's per-call overhead would cost more than the arithmetic. The NumPy path reads views of
the torch parameters, so it always sees the weights the inner loop's optimizer just updated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from epgkit.method import checks
from epgkit.method.dims import Dims
from epgkit.registry import index, register

Params = dict[str, torch.Tensor]
#: NumPy views of Params (``t.detach().numpy()`` shares memory with the tensor).
ArrayParams = dict[str, np.ndarray]

_LOG_2PI = math.log(2 * math.pi)


class _Tanh(torch.autograd.Function):
    """tanh whose forward runs in NumPy: on these CPUs ``torch.tanh`` is ~7x slower than
    ``np.tanh`` (≈740 vs 110 µs for the 8 x 575 x 64 hidden layer of an update), and the
    hidden layers over the whole history are the largest cost of an inner-loop update.
    The result matches torch.tanh to float32 rounding; first-order gradients only.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.from_numpy(np.tanh(x.detach().contiguous().numpy()))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """Elementwise tanh for float32 CPU tensors (see ``_Tanh``)."""
    return _Tanh.apply(x)


def _elu_numpy(h: np.ndarray) -> None:
    np.copyto(h, np.expm1(np.minimum(h, 0)), where=h < 0)


#: Hidden-layer activations by name: the torch function and an in-place NumPy twin that
#: matches it to float32 rounding. tanh is the paper's (and the default).
ACTIVATIONS: dict[str, tuple[Any, Any]] = {
    "tanh": (tanh, lambda h: np.tanh(h, out=h)),
    "relu": (torch.relu, lambda h: np.maximum(h, 0, out=h)),
    "elu": (torch.nn.functional.elu, _elu_numpy),
    "leaky_relu": (torch.nn.functional.leaky_relu, lambda h: np.maximum(h, 0.01 * h, out=h)),
}


def check_architecture(owner: str, hidden: Sequence[int], activation: str) -> None:
    """Refuses an unknown activation or a hidden layer without units, in one sentence."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{owner}: unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}"
        )
    if any(not isinstance(n, int) or n < 1 for n in hidden):
        raise ValueError(f"{owner}: hidden sizes must be positive integers, got {hidden!r}")


def init_mlp(
    sizes: Sequence[int], rngs: Sequence[np.random.Generator], prefix: str, out_scale: float
) -> Params:
    """Stacked MLP weights, one slice per generator (so a slice never depends on K).

    Hidden layers use PyTorch's default uniform(±1/√fan_in); the output layer is scaled by
    ``out_scale`` so that a fresh policy starts near its mean action.
    """
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bound = 1.0 / math.sqrt(fan_in)
        scale = out_scale if i == len(sizes) - 2 else 1.0
        w = np.stack([rng.uniform(-bound, bound, (fan_in, fan_out)) for rng in rngs]) * scale
        b = np.stack([rng.uniform(-bound, bound, (1, fan_out)) for rng in rngs]) * scale
        params[f"{prefix}w{i}"] = torch.tensor(w, dtype=torch.float32)
        params[f"{prefix}b{i}"] = torch.tensor(b, dtype=torch.float32)
    return params


def flat_params(params: Params) -> torch.Tensor:
    """K stacked parameter sets as one (K, P) matrix, in the dict's order (``load_flat``'s)."""
    k = next(iter(params.values())).shape[0]
    return torch.cat([t.reshape(k, -1) for t in params.values()], dim=1)


def load_flat(params: Params, flat: torch.Tensor) -> None:
    """Writes a (K, P) matrix laid out as ``flat_params`` into ``params``, in place."""
    start = 0
    with torch.no_grad():
        for t in params.values():
            size = t[0].numel()
            t.copy_(flat[:, start : start + size].reshape(t.shape))
            start += size
    if start != flat.shape[1]:
        raise ValueError(f"θ₀ has {flat.shape[1]} numbers, the policy {start}")


def _layers(params: dict[str, Any], prefix: str) -> int:
    n = 0
    while f"{prefix}w{n}" in params:
        n += 1
    return n


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """K stacked affine layers: x (K, T, in) @ w (K, in, out) + b (K, 1, out).

    A slice's numbers agree across K only up to rounding: BLAS may choose its kernel by batch
    size, and which one differs between CPUs. Determinism is promised for a fixed K.
    """
    if w.shape[-1] == 1:
        # A product and a row sum rather than BLAS's matrix-vector kernel: it keeps width-1
        # layers (value head, loss output) on one code path for every K, and the documented
        # results were computed this way.
        return (x * w.transpose(1, 2)).sum(-1, keepdim=True) + b
    if w.shape[-1] * 4 <= w.shape[-2]:
        # A narrow layer (64 → 3 action means) as (wᵀ xᵀ)ᵀ: MKL's batched GEMM runs
        # ~1.5x faster (forward and backward) with the narrow side as rows on these CPUs.
        return torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), x.transpose(1, 2)).transpose(
            1, 2
        )
    return torch.baddbmm(b, x, w)


def mlp(params: Params, prefix: str, x: torch.Tensor, activation: str = "tanh") -> torch.Tensor:
    """Applies a stacked MLP to ``x`` of shape (K, T, in); returns (K, T, out)."""
    n = _layers(params, prefix)
    act = ACTIVATIONS[activation][0]
    for i in range(n):
        x = linear(x, params[f"{prefix}w{i}"], params[f"{prefix}b{i}"])
        if i < n - 1:
            x = act(x)
    return x


def mlp_numpy(
    params: ArrayParams, prefix: str, x: np.ndarray, activation: str = "tanh"
) -> np.ndarray:
    """The same MLP in NumPy for one input per inner loop: ``x`` (K, in) → (K, out)."""
    n = _layers(params, prefix)
    act_in_place = ACTIVATIONS[activation][1]
    h = x[:, None, :]
    for i in range(n):
        h = np.matmul(h, params[f"{prefix}w{i}"])
        h += params[f"{prefix}b{i}"]
        if i < n - 1:
            act_in_place(h)
    return h[:, 0]


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
