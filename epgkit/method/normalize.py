"""Running mean/std normalization, kept separately for each of K inner loops (Section 4)."""

from __future__ import annotations

import numpy as np


class RunningNorm:
    """Welford running moments of K streams that receive one sample each per call.

    The inner loop calls this once or twice per environment step on arrays of a few numbers,
    so it works in place on preallocated arrays: NumPy's per-call overhead, not arithmetic,
    is the cost here.

    Args:
        k: Number of streams (inner loops).
        dim: Size of one sample.
        clip: Normalized values are clipped to ±clip.
    """

    def __init__(self, k: int, dim: int, clip: float = 10.0) -> None:
        self.mean = np.zeros((k, dim))
        self._m2 = np.zeros((k, dim))
        self._delta = np.zeros((k, dim))
        self._inv_std = np.ones((k, dim))  # 1 / std, refreshed by update
        self._scratch = np.zeros((k, dim))
        self.count = 0
        self.clip = clip

    def update(self, x: np.ndarray) -> None:
        """Adds one sample per stream, x of shape (K, dim)."""
        self.count += 1
        delta, scratch = self._delta, self._scratch
        np.subtract(x, self.mean, out=delta)
        self.mean += np.multiply(delta, 1.0 / self.count, out=scratch)
        delta *= np.subtract(x, self.mean, out=scratch)
        self._m2 += delta
        if self.count >= 2:  # 1 / sqrt(m2 / count + 1e-8), kept for the normalizations
            inv_std = np.multiply(self._m2, 1.0 / self.count, out=self._inv_std)
            inv_std += 1e-8
            np.divide(1.0, np.sqrt(inv_std, out=inv_std), out=inv_std)

    @property
    def std(self) -> np.ndarray:
        """Running standard deviation, (K, dim); 1 before two samples were seen."""
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.sqrt(self._m2 / self.count + 1e-8)

    def __call__(
        self, x: np.ndarray, center: bool = True, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Normalizes x (K, dim) with the current moments; ``center=False`` only rescales.

        Returns float32; with ``out`` (a float32 array or view of x's shape) writes there.
        """
        y = self._scratch
        if center:
            np.subtract(x, self.mean, out=y)
            y *= self._inv_std
        else:
            np.multiply(x, self._inv_std, out=y)
        # np.minimum/np.maximum rather than np.clip: the same values, without np.clip's
        # Python-level overhead, which is most of the cost at these sizes.
        np.minimum(np.maximum(y, -self.clip, out=y), self.clip, out=y)
        if out is None:
            return y.astype(np.float32)
        out[...] = y
        return out
