"""Outer-loop optimizers: the ``Strategy`` protocol and every built-in strategy.

Importing this package registers them with gin (``Experiment.strategy = @SNES()``):
``OpenES`` (the paper's), ``SNES`` and ``SepCMAES``.
"""

from epgkit.method.strategies.base import Strategy, centered_ranks, shaped
from epgkit.method.strategies.openes import ESState, OpenES
from epgkit.method.strategies.sep_cma import CMAState, SepCMAES
from epgkit.method.strategies.snes import SNES, SNESState

__all__ = [
    "CMAState",
    "ESState",
    "OpenES",
    "SNES",
    "SNESState",
    "SepCMAES",
    "Strategy",
    "centered_ranks",
    "shaped",
]
