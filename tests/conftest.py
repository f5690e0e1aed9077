"""Shared fixtures: gin is cleared around every test; small inner loops for speed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gin
import numpy as np
import pytest
import torch

from epgkit.method.inner_loop import InnerLoop

if TYPE_CHECKING:
    from epgkit.method.experiment import Experiment
    from epgkit.run.rundir import RunDir

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture
def tiny_inner() -> InnerLoop:
    """A PointGoal inner loop of a few updates with a short buffer."""
    return InnerLoop(
        env_id="epgkit/PointGoal-v0", steps=128, update_every=32, buffer_size=64, eval_episodes=1
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def evolve_on_0_1_2_workers(tmp_path):
    """Evolves an experiment in process, then on local Dask clusters of 1 and 2 workers, each
    into its own run directory under ``tmp_path``: what the determinism contract compares."""

    # Imported here, so that no other test runs with the run machinery already imported.
    from epgkit.method.evolve import evolve
    from epgkit.run.cluster import connect
    from epgkit.run.rundir import RunDir

    def evolved(exp: Experiment) -> list[RunDir]:
        runs = []
        for workers in (0, 1, 2):
            run = RunDir(tmp_path / f"w{workers}")
            run.create("# test\n", [])
            with connect(workers) as executor:
                evolve(exp, run, executor)
            runs.append(run)
        return runs

    return evolved
