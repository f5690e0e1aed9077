"""Shared fixtures: gin is cleared around every test; small inner loops for speed."""

from __future__ import annotations

import gin
import numpy as np
import pytest
import torch

from epgkit.method.inner_loop import InnerLoop

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
