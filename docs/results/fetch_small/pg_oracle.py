"""A hand-written policy gradient for Fetch, to show what a learned advantage could reach.

Each step's loss is −Â·log π(a|s) with Â = a_xyz · signal: the gripper's commanded move
times the target's offset from the gripper (the loss's task signal), so an action toward the
target is made more likely. It is the learned-advantage form of gin/fetch_advantage_small.gin
with Â written by hand, and has no parameters: it runs as a baseline (docs/results.md §3.9).
"""

from dataclasses import dataclass

import numpy as np
import torch

import epgkit


@epgkit.register("loss")
@dataclass(frozen=True)
class TowardTarget:
    """−(a_xyz · signal)·log π(a|s); Adam makes the scale of Â irrelevant."""

    needs_history = False

    def phi_size(self, ctx) -> int:
        return 0

    def init_phi(self, ctx, rng) -> np.ndarray:
        return np.zeros(0, np.float32)

    def __call__(self, batch, prepared) -> torch.Tensor:
        act, signal = batch.at_rows(batch.hist.act), batch.at_rows(batch.hist.signal)
        adv = (act[..., :3] * signal).sum(-1)
        return -adv * batch.at_rows(batch.logp)
