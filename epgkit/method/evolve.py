"""The outer loop (Algorithm 1): perturb φ, run W inner loops, rank, step, checkpoint.

Every random draw of epoch e comes from ``SeedSequence([seed, e])``, so an epoch is fully
determined by the seed and the ES state before it: results do not depend on the number of
workers, and a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

import numpy as np
import torch

from epgkit.method import past_init
from epgkit.method.executor import Executor
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import Job, Result, checked, run_batch
from epgkit.method.strategies import Strategy
from epgkit.method.user_code import UserCodeError, reported

# Evolution draws task seeds below 2**31; test-time training draws them above (see train).
TASK_SEED_LIMIT = 2**31


class Store(Protocol):
    """Where the outer loop keeps its state between epochs (``epgkit.run.rundir.RunDir``)."""

    def checkpoint(self) -> dict[str, Any] | None:
        """The last complete epoch's checkpoint, or None for a new run."""

    def save_epoch(
        self, state: dict[str, Any], records: list[dict[str, Any]], metrics: dict[str, Any]
    ) -> None:
        """Keeps one finished epoch: its ES state, inner-loop records and metrics."""

    def save_loss(self, best: bool, phi: np.ndarray, meta: dict[str, Any]) -> None:
        """Keeps a loss: the best one so far, or else the latest φ."""


def epoch_jobs(exp: Experiment, candidates: np.ndarray, epoch: int) -> list[Job]:
    """The W inner loops of an epoch: worker w evaluates candidate ⌈wV/W⌉ on its own task.

    Candidates the strategy pairs (``shared_tasks``, e.g. the halves of an antithetic ±v pair)
    see the same tasks and seeds: the j-th inner loop of one is the j-th of the other.
    """
    w, v = exp.inner_loops, len(candidates)
    rng = np.random.default_rng(np.random.SeedSequence([exp.seed, epoch, 1]))
    task_seeds = rng.integers(0, TASK_SEED_LIMIT, w)
    seeds = rng.integers(0, 2**63, w)
    per = w // v
    for c, source in enumerate(exp.strategy.shared_tasks()):
        mine, theirs = slice(c * per, (c + 1) * per), slice(source * per, (source + 1) * per)
        task_seeds[mine], seeds[mine] = task_seeds[theirs], seeds[theirs]
    alpha = exp.alpha(epoch)
    return [
        Job(candidates[i * v // w], alpha, int(task_seeds[i]), int(seeds[i]), i, i * v // w)
        for i in range(w)
    ]


def run_jobs(exp: Experiment, jobs: list[Job], executor: Executor) -> list[Result]:
    """Runs jobs in fixed batches of ``exp.batch_size`` (so results never depend on workers)."""
    k = exp.batch_size
    batches = [(exp.inner, jobs[i : i + k]) for i in range(0, len(jobs), k)]
    return [r for batch in checked(executor.map(run_batch, batches)) for r in batch]


def objective(result: Result, curve_weight: float) -> float:
    """What the ES maximizes for one inner loop (``Experiment.fitness_curve``): its final
    return blended with its learning curve's; −inf when it failed."""
    if result.failed is not None:
        return -math.inf
    if curve_weight == 0:
        return result.fitness
    return (1 - curve_weight) * result.fitness + curve_weight * result.curve()


def candidate_fitness(
    results: list[Result], population: int, curve_weight: float = 0.0
) -> np.ndarray:
    """F(φ + σv): the mean objective of the inner loops sharing v; a failed one makes it −inf."""
    total, count = np.zeros(population), np.zeros(population)
    for r in results:
        total[r.candidate] += objective(r, curve_weight)
        count[r.candidate] += 1
    return total / count


def _refuse_all_failed(results: list[Result], epoch: int) -> None:
    """Stops the run when every inner loop of an epoch failed: some failing is an ES's lot
    (ranked last), all failing leaves it nothing to learn from, and is almost always the env or
    the loss at fault. Raised before the epoch is checkpointed, so a resumed run redoes it."""
    if any(r.failed is None for r in results):
        return
    first = results[0]
    raise UserCodeError(
        f"every inner loop of epoch {epoch + 1} failed, the first with {first.failed} "
        f"(task seed {first.task_seed}, seed {first.seed}); the ES cannot learn from that: "
        "check the env and the loss (or a too large σ of the ES)"
    )


def _refuse_bad_candidates(c: np.ndarray, size: int, strategy: Strategy, epoch: int) -> None:
    """A strategy's candidates must be finite vectors of the loss's size: anything else would
    fail every inner loop and be blamed on the loss."""
    name = f"strategy {type(strategy).__name__}"
    if c.ndim != 2 or c.shape[1] != size:
        raise UserCodeError(
            f"{name} proposed candidates of shape {c.shape} in epoch {epoch + 1}; the loss "
            f"takes vectors of {size} numbers"
        )
    if not np.isfinite(c).all():
        raise UserCodeError(f"{name} proposed a non-finite φ in epoch {epoch + 1}")


def _stats(results: list[Result], curve_weight: float) -> dict[str, float]:
    """The final returns of the inner loops that did not fail; under a curve weight, also
    their learning curves' mean and the ES's objective's."""
    done = [r for r in results if r.failed is None]
    ok = np.array([r.fitness for r in done])
    keys = ("mean", "std", "max", "min", "median")
    stats = {f"fitness_{k}": math.nan for k in keys}
    if len(ok):
        values = (ok.mean(), ok.std(), ok.max(), ok.min(), np.median(ok))
        stats = {f"fitness_{k}": float(v) for k, v in zip(keys, values, strict=True)}
    if curve_weight > 0:
        nan = math.nan
        stats["curve_mean"] = float(np.mean([r.curve() for r in done])) if done else nan
        stats["objective_mean"] = (
            float(np.mean([objective(r, curve_weight) for r in done])) if done else nan
        )
    return stats


def _record(epoch: int, r: Result) -> dict[str, Any]:
    row = asdict(r)
    del row["episodes"], row["kl"], row["theta"]
    return {"epoch": epoch, **row}


#: Checkpoint keys the outer loop writes itself; a strategy's state takes the others.
RUN_KEYS = ("epoch", "env_steps", "best_fitness", "best_phi", "metrics_line", "records",
            "log_digests", *past_init.POOL_KEYS)  # fmt: skip


def save_state(strategy: Strategy, state: Any) -> dict[str, Any]:
    """The strategy's state for a checkpoint: arrays as tensors, numbers and strings as they are."""
    saved = dict(strategy.save(state))
    clash = sorted(saved.keys() & set(RUN_KEYS))
    if clash:
        raise ValueError(f"{type(strategy).__name__} saves its state under reserved keys {clash}")
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in saved.items()}


def load_state(strategy: Strategy, ckpt: dict[str, Any]) -> Any:
    """The strategy's state from a checkpoint (``ValueError`` naming what is missing)."""
    return strategy.load({k: v for k, v in ckpt.items() if k not in RUN_KEYS})


def evolve(
    exp: Experiment,
    run: Store,
    executor: Executor,
    on_epoch: Callable[[dict[str, Any]], None] = lambda m: None,
    loss_meta: dict[str, Any] | None = None,
    phi0: np.ndarray | None = None,
) -> Any:
    """Runs (or continues) the evolution described by ``exp`` in ``run``; returns the
    strategy's last state (``exp.strategy.mean(state)`` is the last φ).

    A new run starts the strategy at ``phi0`` (``Experiment.init_loss``'s φ, read by the
    caller) or, without it, at the loss's own random φ; a resumed one at its checkpoint."""
    strategy = exp.strategy
    ckpt = run.checkpoint()
    if ckpt is not None:
        state = load_state(strategy, ckpt)
        start, env_steps = ckpt["epoch"], ckpt["env_steps"]
        best = (ckpt["best_fitness"], ckpt["best_phi"].numpy())
    else:
        if phi0 is None:
            phi0 = exp.inner.init_phi(np.random.default_rng(np.random.SeedSequence([exp.seed, 0])))
        elif len(phi0) != exp.inner.phi_size():
            raise ValueError(f"phi0 has {len(phi0)} parameters, the loss {exp.inner.phi_size()}")
        phi0 = np.asarray(phi0, np.float32)
        state, start, env_steps, best = strategy.init(phi0), 0, 0, (-math.inf, phi0)
    meta = dict(loss_meta or {})
    past = exp.past_init
    pool = past_init.load(ckpt or {}, exp.inner.theta_size()) if past is not None else None

    user, size = {"strategy": strategy}, np.size(strategy.mean(state))
    for epoch in range(start, exp.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence([exp.seed, epoch, 0]))
        with reported(user):
            draws = strategy.ask(state, rng)
            candidates = np.asarray(strategy.candidates(state, draws), np.float32)
        _refuse_bad_candidates(candidates, size, strategy, epoch)
        jobs = epoch_jobs(exp, candidates, epoch)
        if pool is not None:  # Figure 12B: some inner loops start from past policies
            plan = past_init.plan(past, exp.seed, epoch, pool, strategy.shared_tasks(), len(jobs))
            jobs, starts = past_init.assign(plan, pool, jobs), past_init.origins(plan, pool)
        results = run_jobs(exp, jobs, executor)
        _refuse_all_failed(results, epoch)
        fitness = candidate_fitness(results, len(candidates), exp.fitness_curve)
        # The mean the candidates surround, and the step sizes this tell uses.
        phi_evaluated, strategy_metrics = strategy.mean(state), strategy.metrics(state)
        with reported(user):
            state = strategy.tell(state, draws, fitness)
        if not np.isfinite(strategy.mean(state)).all():  # refused before it is checkpointed
            raise UserCodeError(
                f"strategy {type(strategy).__name__} made its mean φ non-finite in tell, "
                f"epoch {epoch + 1}"
            )

        env_steps += sum(r.env_steps for r in results)
        metrics = {
            "epoch": epoch,
            **_stats(results, exp.fitness_curve),
            "alpha": exp.alpha(epoch),
            **strategy_metrics,
            "failures": sum(r.failed is not None for r in results),
            **(past_init.metrics(plan, results) if pool is not None else {}),
            "env_steps": env_steps,
            "wall_s": time.perf_counter() - t0,
        }
        guided = metrics["alpha"] > 0
        score = metrics["objective_mean" if exp.fitness_curve > 0 else "fitness_mean"]
        if not guided and math.isfinite(score) and score > best[0]:
            # The best loss is the mean φ whose perturbations scored best on average, among
            # epochs where it trained alone: under guidance (α > 0) PPO shares the credit,
            # and at α = 1 the fitness says nothing about φ at all.
            best = (score, phi_evaluated)
            scores = {k: metrics[k] for k in ("fitness_mean", "objective_mean") if k in metrics}
            run.save_loss(True, best[1], {**meta, "epoch": epoch, **scores})
        run.save_loss(False, strategy.mean(state), {**meta, "epoch": epoch + 1})
        records = [_record(epoch, r) for r in results]
        if pool is not None:
            for record, origin in zip(records, starts, strict=True):
                record["theta0_from"] = origin
            pool = past_init.admit(past, pool, epoch, results)
        checkpoint = {
            **save_state(strategy, state),
            "epoch": epoch + 1,
            "env_steps": env_steps,
            "best_fitness": float(best[0]),
            "best_phi": torch.from_numpy(np.asarray(best[1])),
            **(past_init.save(pool) if pool is not None else {}),
        }
        run.save_epoch(checkpoint, records, metrics)
        on_epoch(metrics)
    return state
