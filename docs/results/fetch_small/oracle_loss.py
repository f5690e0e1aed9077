"""A hand-written loss for Fetch that uses the target, to bound what a learned one could reach.

It regresses π's mean onto the move toward the target (the loss's task signal is the target's
offset from the gripper in units of 0.15 m, and an action of 1 moves the gripper 5 cm, hence
the factor 3; the fourth action, the blocked gripper, onto 0) and pays for π's variance. It has
no parameters: it runs as a baseline (docs/results.md §3.9).
"""

from dataclasses import dataclass

import numpy as np
import torch

import epgkit


@epgkit.register("loss")
@dataclass(frozen=True)
class OracleLoss:
    """‖μ(s) − clip(3 · signal)‖² + std_coef · Σ σ²."""

    needs_history = False
    needs_logp = False
    std_coef: float = 0.5

    def phi_size(self, ctx) -> int:
        return 0

    def init_phi(self, ctx, rng) -> np.ndarray:
        return np.zeros(0, np.float32)

    def __call__(self, batch, prepared) -> torch.Tensor:
        d = batch.pi.shape[-1] // 2
        mu, log_std = batch.at_rows(batch.pi[..., :d]), batch.at_rows(batch.pi[..., d:])
        signal = batch.at_rows(batch.hist.signal)
        goal = torch.cat([torch.clamp(3 * signal, -1, 1), torch.zeros_like(signal[..., :1])], -1)
        return ((mu - goal) ** 2).sum(-1) + self.std_coef * torch.exp(2 * log_std).sum(-1)
