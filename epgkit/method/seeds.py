"""The random streams of K inner loops: each inner loop draws from its own seed only, so its
result does not depend on its batch-mates (the determinism contract of ``InnerLoop.run``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Streams:
    """Generators spawned from each inner loop's seed, one list of K per use.

    The spawn order (init, act, shuffle, env) is part of the results: changing it changes
    every recorded run.

    Attributes:
        init: θ's initial draw and the loss's initial state.
        act: The noise that samples actions, in training and evaluation.
        shuffle: The order of the last M steps in each update's minibatches.
        env: The envs' first reset seeds.
    """

    init: list[np.random.Generator]
    act: list[np.random.Generator]
    shuffle: list[np.random.Generator]
    env: list[np.random.Generator]

    @classmethod
    def of(cls, seeds: Sequence[int]) -> Streams:
        """The streams of inner loops with these seeds."""
        spawned = [np.random.SeedSequence(seed).spawn(4) for seed in seeds]
        streams = [[np.random.default_rng(s) for s in ss] for ss in spawned]
        return cls(*(list(column) for column in zip(*streams, strict=True)))

    def reset_seeds(self) -> list[int]:
        """The seeds of the envs' first resets."""
        return [int(rng.integers(2**31)) for rng in self.env]

    def permutations(self, m: int, passes: int) -> np.ndarray:
        """Each inner loop's order of the last M steps for one update, ``passes`` shuffled
        passes one after another: (K, passes·M) indices into the M steps."""
        per_pass = [np.stack([rng.permutation(m) for rng in self.shuffle]) for _ in range(passes)]
        return np.concatenate(per_pass, axis=1)
