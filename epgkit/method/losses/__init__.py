"""Losses the inner loop trains with: the paper's learned loss L_φ and the PG surrogates.

Every loss evaluates K inner loops at once, each with its own φ (a row of a (K, P) tensor),
and returns one loss per minibatch step, (K, B). ``EPGLoss`` (``epg``) is Section 3.3 /
Figure 2: temporal convolutions over the N-step buffer ending at each step give a context
vector, and a small dense head maps [row, context] to the step's loss. ``PPOLoss``,
``DPOLoss`` (Lu et al. 2022) and ``ReinforceLoss`` (``policy_gradient``) have no φ (P = 0) and
serve both as the guidance L_pg of Eq. (10) and as like-for-like baselines, since they run in
exactly the same inner loop. The interface they share, ``Loss``, and what it reads,
``LossContext``, ``History``, ``Update`` and ``Batch``, are in ``base``. Importing this package
registers the four losses with gin.
"""

from epgkit.method.losses.base import Batch, History, Loss, LossContext, Update
from epgkit.method.losses.epg import EPGLoss
from epgkit.method.losses.policy_gradient import DPOLoss, PPOLoss, ReinforceLoss, dpo_drift, gae

__all__ = [
    "Batch",
    "DPOLoss",
    "EPGLoss",
    "History",
    "Loss",
    "LossContext",
    "PPOLoss",
    "ReinforceLoss",
    "Update",
    "dpo_drift",
    "gae",
]
