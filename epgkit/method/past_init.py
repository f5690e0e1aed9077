"""Initialization from past policies (Section 4.3, Figure 12B): some inner loops start from a
policy trained by an inner loop of an earlier epoch instead of a fresh random θ.

A learned loss only ever sees policies younger than U steps, and at test time it can crash a
policy trained longer (Figure 12A). Starting some inner loops from the final θ of past inner
loops shows the loss policies that have already been trained for U, 2U, ... steps, so it keeps
improving them past its horizon (Figure 12B).

The pool holds the final θ (flat float32, ``mlp.flat_params``'s layout, log-std included) of
past inner loops, the newest replacing the oldest. Only θ is restored: the observation and
reward normalizers, Adam's moments and the loss's memory start fresh, as they do under EPG+I,
since the new task has its own statistics. Which inner loops enter the pool and which start
from which entry is drawn from the epoch's seed alone (``SeedSequence([seed, epoch, 2])``),
never from fitness ordering or arrival order, so the pool is the same on any number of workers
and across ``--resume`` (it is part of the checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from epgkit.method import checks
from epgkit.method.jobs import Job, Result
from epgkit.registry import register

#: The checkpoint keys of the pool (``epgkit.method.evolve.RUN_KEYS``).
POOL_KEYS = ("pool_theta", "pool_origin")


@register("past_init")
@dataclass(frozen=True)
class PastInit:
    """Which inner loops start from past policies, and how many policies are kept.

    Attributes:
        fraction: Of each candidate's W/V inner loops, ⌈fraction · W/V⌉ start from a pool
            policy (the same number for every candidate, so that none is favoured by its
            starts); from the first epoch with a non-empty pool on.
        pool_size: Policies kept; the newest replace the oldest.
        admit: Inner loops per epoch whose final θ enters the pool, drawn from the epoch's seed
            (a failed one is left out, not replaced).
    """

    fraction: float = 0.5
    pool_size: int = 64
    admit: int = 8

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        problems = [
            f"fraction must be in (0, 1], got {self.fraction}"
            if not 0 < self.fraction <= 1
            else "",
            f"pool_size must be ≥ 1, got {self.pool_size}" if self.pool_size < 1 else "",
            f"admit must be ≥ 1, got {self.admit}" if self.admit < 1 else "",
        ]
        checks.refuse("PastInit", problems)


@dataclass(frozen=True)
class Pool:
    """Past policies: ``theta`` (S, P) float32 and ``origin`` (S, 2) int64, the (epoch, index)
    of the inner loop that trained each one."""

    theta: np.ndarray
    origin: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Pool:
        """A pool without policies, for θ of ``size`` numbers."""
        return cls(np.zeros((0, size), np.float32), np.zeros((0, 2), np.int64))

    def __len__(self) -> int:
        return len(self.theta)


@dataclass(frozen=True)
class Plan:
    """One epoch's use of the pool: each inner loop's entry to start from (or None) and
    whether its final θ is kept for the pool."""

    starts: tuple[int | None, ...]
    keep: tuple[bool, ...]


def plan(
    cfg: PastInit, seed: int, epoch: int, pool: Pool, shared_tasks: tuple[int, ...], w: int
) -> Plan:
    """The starts and admissions of epoch ``epoch``'s W inner loops (``evolve.epoch_jobs``'s
    order: candidate c holds inner loops c·W/V .. (c+1)·W/V − 1).

    A candidate that shares another's tasks (an antithetic mirror, ``shared_tasks``) also
    shares its starts, so a pair's fitness still differs by the loss alone.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 2]))
    per = w // len(shared_tasks)
    # Admissions first: they never depend on the pool's size.
    admitted = rng.choice(w, min(cfg.admit, w), replace=False)
    entries = rng.integers(0, max(len(pool), 1), w)
    keep = np.zeros(w, bool)
    keep[admitted] = True
    starts: list[int | None] = [None] * w
    if len(pool):
        n = math.ceil(cfg.fraction * per)
        for c, source in enumerate(shared_tasks):
            for j in range(per - n, per):  # the last n of each candidate: tasks are i.i.d.
                starts[c * per + j] = int(entries[source * per + j])
    return Plan(tuple(starts), tuple(bool(k) for k in keep))


def assign(plan: Plan, pool: Pool, jobs: list[Job]) -> list[Job]:
    """The epoch's jobs with their planned starts (``Job.theta0``) and admissions
    (``Job.keep_theta``)."""
    return [
        replace(job, theta0=None if s is None else pool.theta[s], keep_theta=keep)
        for job, s, keep in zip(jobs, plan.starts, plan.keep, strict=True)
    ]


def origins(plan: Plan, pool: Pool) -> list[list[int] | None]:
    """For each inner loop, the (epoch, index) of the inner loop whose final θ it started
    from, or None: what its record keeps, so that it can be re-run alone."""
    return [None if s is None else pool.origin[s].tolist() for s in plan.starts]


def metrics(plan: Plan, results: list[Result]) -> dict[str, float]:
    """The epoch's past starts and the mean fitness of the inner loops that started fresh and
    of those that started from the pool (NaN when there are none, or all failed): only the
    former compares with an evolution without past policies."""
    fresh = [r.fitness for r, s in zip(results, plan.starts, strict=True) if s is None]
    past = [r.fitness for r, s in zip(results, plan.starts, strict=True) if s is not None]

    def mean(values: list[float]) -> float:
        ok = [v for v in values if math.isfinite(v)]
        return float(np.mean(ok)) if ok else math.nan

    return {"past_starts": len(past), "fitness_fresh_mean": mean(fresh),
            "fitness_past_mean": mean(past)}  # fmt: skip


def admit(cfg: PastInit, pool: Pool, epoch: int, results: list[Result]) -> Pool:
    """The pool after epoch ``epoch``: the kept final θ of its inner loops that did not fail,
    in their order, appended; the oldest dropped beyond ``pool_size``."""
    new = [r for r in results if r.theta is not None and r.failed is None]
    if not new:
        return pool
    theta = np.concatenate([pool.theta, np.stack([r.theta for r in new]).astype(np.float32)])
    origin = np.concatenate([pool.origin, np.array([[epoch, r.index] for r in new], np.int64)])
    return Pool(theta[-cfg.pool_size :], origin[-cfg.pool_size :])


def save(pool: Pool) -> dict[str, torch.Tensor]:
    """The pool as checkpoint entries."""
    return {
        "pool_theta": torch.from_numpy(pool.theta),
        "pool_origin": torch.from_numpy(pool.origin),
    }


def load(ckpt: dict[str, Any], size: int) -> Pool:
    """The pool of a checkpoint; an empty one for a checkpoint written without it (a run
    started before past policies existed).

    Raises:
        ValueError: The checkpoint's policies do not have ``size`` numbers.
    """
    if "pool_theta" not in ckpt:
        return Pool.empty(size)
    theta = ckpt["pool_theta"].numpy().astype(np.float32)
    origin = ckpt["pool_origin"].numpy().astype(np.int64)
    if theta.ndim != 2 or theta.shape[1] != size or origin.shape != (len(theta), 2):
        raise ValueError(
            f"the checkpoint's pool of past policies holds θ of shape {tuple(theta.shape)}, "
            f"the policy has {size} numbers"
        )
    return Pool(theta, origin)
