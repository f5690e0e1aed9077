"""A hand-written policy gradient for docs/results.md §3.4: Â_t = r_t − r_{t−1}, the one-step
change of PointGoal's reward (−distance to the goal), as a registered loss without φ. The
command that runs it beside the evolved loss and the tuned PPOs is in §3.4 (`-b "import
delta_reward"` with this folder on PYTHONPATH, and a `delta` baseline using `DeltaReward()`).
"""

from dataclasses import dataclass

import numpy as np
import torch

import epgkit


@epgkit.register("loss")
@dataclass(frozen=True)
class DeltaReward:
    """−(r_t − r_{t−1})·log π(a_t|s_t); weight 0 at an episode's first step."""

    needs_history = True  # r_{t−1} of the first step of an update is in the history

    def phi_size(self, ctx) -> int:
        return 0

    def init_phi(self, ctx, rng) -> np.ndarray:
        return np.zeros(0, np.float32)

    def __call__(self, batch, prepared) -> torch.Tensor:
        r, done = batch.hist.reward, batch.hist.done
        previous = torch.cat([r[:, :1], r[:, :-1]], 1)
        first = torch.cat([torch.ones_like(done[:, :1]), done[:, :-1]], 1) > 0
        adv = torch.where(first, torch.zeros_like(r), r - previous)
        return -batch.at_rows(adv) * batch.at_rows(batch.logp)
