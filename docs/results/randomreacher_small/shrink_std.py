"""A hand-written loss for RandomReacher that only lowers the policy's σ (docs/results.md §3.10).

Each step's loss is the policy's log-std, so Adam lowers log σ by about δ_in per step and
leaves the mean where it started. It shows how much of a return here is the control cost of
the sampled actions, and how far δ_in and the number of Adam steps let any loss go. It has no
parameters and runs as a baseline.
"""

from dataclasses import dataclass

import numpy as np
import torch

import epgkit


@epgkit.register("loss")
@dataclass(frozen=True)
class ShrinkStd:
    """Σ log σ of the action dimensions; the mean gets no gradient."""

    needs_history = False
    needs_logp = False

    def phi_size(self, ctx) -> int:
        return 0

    def init_phi(self, ctx, rng) -> np.ndarray:
        return np.zeros(0, np.float32)

    def __call__(self, batch, prepared) -> torch.Tensor:
        pi = batch.at_rows(batch.pi)
        return pi[..., pi.shape[-1] // 2 :].sum(-1)
