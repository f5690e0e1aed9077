"""Running mean/std normalization, kept separately for each of K inner loops (Section 4)."""

from __future__ import annotations

import numpy as np


class RunningNorm:
    """Welford running moments of K streams that receive one sample each per call.

    Args:
        k: Number of streams (inner loops).
        dim: Size of one sample.
        clip: Normalized values are clipped to ±clip.
    """

    def __init__(self, k: int, dim: int, clip: float = 10.0) -> None:
        self.mean = np.zeros((k, dim))
        self._m2 = np.zeros((k, dim))
        self.count = 0
        self.clip = clip

    def update(self, x: np.ndarray) -> None:
        """Adds one sample per stream, x of shape (K, dim)."""
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (x - self.mean)

    @property
    def std(self) -> np.ndarray:
        """Running standard deviation, (K, dim); 1 before two samples were seen."""
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.sqrt(self._m2 / self.count + 1e-8)

    def __call__(self, x: np.ndarray, center: bool = True) -> np.ndarray:
        """Normalizes x (K, dim) with the current moments; ``center=False`` only rescales."""
        shifted = x - self.mean if center else x
        return np.clip(shifted / self.std, -self.clip, self.clip).astype(np.float32)
