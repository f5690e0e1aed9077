"""``TestTime``: what a test-time training (``epgkit train``) tests, as gin bindings.

A module of its own, registered with every component (``epgkit.components``), so that a config
that binds it parses in any process, before or after another run has used gin.
"""

from __future__ import annotations

from dataclasses import dataclass

import gin

from epgkit.method import checks


@gin.configurable
@dataclass(frozen=True)
class TestTime:
    """A test-time training (``epgkit train``): what the evolved loss is tested on, against
    which baselines. Its output directory is ``Launch.run_dir``.

    Attributes:
        env_id: Test on this env instead of the one the loss was evolved on (same spaces).
        steps: Env steps U of each run; None keeps the experiment's.
        runs: Held-out tasks, one inner loop per method each.
        seed: Seed of the held-out tasks and of the runs' seeds.
        baselines: Names of ``Experiment.baselines`` to train on the same tasks.
    """

    __test__ = False  # not a pytest class, whatever its name

    env_id: str | None = None
    steps: int | None = None
    runs: int = 20
    seed: int = 0
    baselines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks.check(self)
        problems = [
            f"runs must be ≥ 1, got {self.runs}" if self.runs < 1 else "",
            f"seed must be ≥ 0, got {self.seed}" if self.seed < 0 else "",
            f"steps must be ≥ 1, got {self.steps}"
            if self.steps is not None and self.steps < 1
            else "",
        ]
        if any(problems):
            raise ValueError("TestTime: " + "; ".join(p for p in problems if p))
