"""Stacked MLPs: K independent networks (one per inner loop) evaluated in one batched matmul
a layer, in torch where gradients are needed and in NumPy for one input per inner loop.

Every parameter carries a leading dimension K, so the K inner loops of a batch cost one
batched product per layer. The NumPy twin (``mlp_numpy``) reads views of the torch parameters
and serves acting, where torch's per-call overhead would cost more than the arithmetic.
``flat_params`` and ``load_flat`` lay K parameter sets out as one (K, P) matrix (EPG+I's θ₀).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Params = dict[str, torch.Tensor]
#: NumPy views of Params (``t.detach().numpy()`` shares memory with the tensor).
ArrayParams = dict[str, np.ndarray]


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
