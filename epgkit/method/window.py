"""The rolling history of K inner loops: the last N + M − 1 steps, which the loss reads.

At an update the loss is evaluated at each of the last M steps over the N-row window ending
at it, so the buffer holds T = N + M − 1 rows: the M steps being updated on and the N − 1
before them. Rows are written in place into preallocated arrays, and torch tensors share
their memory, so the ``History`` the loss reads is built once; after an update the window
slides by M rows, in place too. It starts as N zero rows (Algorithm 2's empty buffer).
"""

from __future__ import annotations

import numpy as np
import torch

from epgkit.method.dims import Dims
from epgkit.method.losses import History


class Window:
    """The T = N + M − 1 most recent steps of K inner loops, as NumPy arrays (for writing) and
    as a ``History`` of tensors over the same memory (for the losses).

    Args:
        k: Inner loops.
        dims: Their env's dims.
        dist_dim: Size of π(·|s).
        n: N, rows of history a step's loss sees.
        m: M, steps between updates.

    Attributes:
        full: The whole window (T rows), for losses that read the history.
        recent: Its last M rows only, for losses that do not.
    """

    def __init__(self, k: int, dims: Dims, dist_dim: int, n: int, m: int) -> None:
        rows = n + m - 1
        self.m, self.first = m, rows - m  # the last M rows start here
        d = dims
        self.obs = np.zeros((k, rows, d.obs_dim), np.float32)
        self.act = np.zeros((k, rows, d.act_dim), np.float32)
        self.act_raw = np.zeros((k, rows, 1 if d.discrete else d.act_dim), np.float32)
        self.reward = np.zeros((k, rows), np.float32)
        self.reward_scaled = np.zeros((k, rows), np.float32)
        self.done = np.zeros((k, rows), np.float32)
        self.signal = np.zeros((k, rows, d.signal_dim), np.float32)
        self.logp_old = np.zeros((k, rows), np.float32)
        self.pi_old = np.zeros((k, rows, dist_dim), np.float32)
        self.progress = np.zeros((k, rows), np.float32)
        self.next_obs = np.zeros((k, d.obs_dim), np.float32)
        self._arrays = tuple(getattr(self, name) for name in _SLIDING)
        tensors = {name: torch.from_numpy(getattr(self, name)) for name in _SLIDING}
        next_obs = torch.from_numpy(self.next_obs)
        self.full = History(next_obs=next_obs, **tensors)
        self.recent = History(next_obs=next_obs, **{n_: t[:, -m:] for n_, t in tensors.items()})

    def row(self, t: int) -> int:
        """The row that step t (0-based) of the current M is written to."""
        return self.first + t % self.m

    def slide(self) -> None:
        """Drops the oldest M rows; the last M rows are then free for the next M steps."""
        m = self.m
        for arr in self._arrays:
            arr[:, :-m] = arr[:, m:]


# The per-row fields of History, in the order of Window's arrays.
_SLIDING = ("obs", "act", "act_raw", "reward", "reward_scaled", "done", "signal", "logp_old",
            "pi_old", "progress")  # fmt: skip
