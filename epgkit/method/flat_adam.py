"""Adam over every trainable tensor of K inner loops at once, in one flat buffer."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from epgkit.method.mlp import Params


class FlatAdam:
    """Adam (the update rule of ``torch.optim.Adam``) over tensors that live in one flat buffer.

    Every trainable tensor becomes a view of one flat parameter buffer and its gradient a view
    of one flat gradient buffer (autograd accumulates into an existing ``.grad`` in place), so a
    step is six vector operations for all tensors of all K inner loops instead of a dozen per
    tensor, and no ``torch.optim`` is needed (its first use imports ``torch._dynamo``: ≈1.5 s
    and ≈70 MB on every Dask worker). The update is elementwise, so inner loops stay
    independent of their batch-mates.

    Args:
        groups: Dicts of tensors to train; each entry is replaced by its view in the buffer.
        lr: Step size.
        betas: Decay rates of the first and second moments.
        eps: Added to the root of the second moment.
    """

    def __init__(
        self,
        groups: Sequence[Params],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        size = sum(t.numel() for g in groups for t in g.values())
        self.data, self.grad = torch.zeros(size), torch.zeros(size)
        self.m, self.v = torch.zeros(size), torch.zeros(size)
        offset = 0
        for group in groups:
            for name, t in group.items():
                view = self.data[offset : offset + t.numel()].view(t.shape)
                view.copy_(t.detach())
                view.requires_grad_(True)
                view.grad = self.grad[offset : offset + t.numel()].view(t.shape)
                group[name] = view
                offset += t.numel()
        self._views = [t for g in groups for t in g.values()]
        self.lr, self.betas, self.eps, self.steps = lr, betas, eps, 0

    def zero_grad(self) -> None:
        """Zeroes every gradient (the views keep pointing at the flat buffer)."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on every tensor, with bias correction as in ``torch.optim.Adam``."""
        if self.steps == 0:  # autograd must have accumulated into the views, not replaced them
            low = self.grad.data_ptr()
            high = low + self.grad.numel() * self.grad.element_size()
            if not all(low <= t.grad.data_ptr() < high for t in self._views if t.numel()):
                raise RuntimeError("autograd replaced a gradient view; FlatAdam cannot train it")
        self.steps += 1
        b1, b2 = self.betas
        self.m.lerp_(self.grad, 1 - b1)
        self.v.mul_(b2).addcmul_(self.grad, self.grad, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**self.steps)).add_(self.eps)
        self.data.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.steps))
