"""What the driver checks before a run directory is created: values, memory and the user's code.

A run refused here leaves nothing behind, so the corrected command just works:

- ``check_values``: every value of every component, the user's own included, has the type its
  annotation declares (``epgkit.method.checks``; each built-in component also checks its ranges).
- ``check_memory``: the largest buffers of one batch of K inner loops (the history, θ with
  its Adam state and activations, φ) times the batches running at once, plus the ES's V
  candidates, fit in the memory available.
- ``check_code``: the env is built, reset and stepped, and the loss (and the guidance loss)
  runs one update on a tiny batch in this process: what raises, or a first update that is
  not finite, is refused in one line naming the env or the loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.error import Error as GymError

from epgkit.errors import ConfigError
from epgkit.method import checks
from epgkit.method.dims import Dims
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.method.user_code import (
    UserCodeError,
    blame,
    blamed,
    inner_loop_parts,
    reported,
    where_defined,
)

FLOAT = 4  # bytes of a float32
#: What a test-time training keeps per run and method, and per update of it (Python objects:
#: the job, the result, a curve point as a dict); a rough lower bound, to refuse the absurd.
RUN_BYTES, POINT_BYTES = 1_000, 300
#: Steps of a tiny run's evaluation episode: enough to exercise reset and step.
TINY_EVAL_STEPS = 5


def check_values(root: Any) -> None:
    """Checks every component of ``root`` (an experiment, a dict of inner loops) in one pass."""
    try:
        checks.check_all(root)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def phi_size(inner: InnerLoop) -> int:
    """The size of ``inner``'s evolved vector (φ, and θ₀ under ``evolve_init``); a loss whose
    own checks refuse the sizes is a config error, a loss that fails is named."""
    try:
        size = int(inner.phi_size())
    except (ConfigError, UserCodeError, GymError):
        raise
    except ValueError as err:  # the loss's own check of the config (e.g. N too short)
        raise ConfigError(f"{type(inner.loss).__name__}: {err}") from None
    except Exception as err:  # noqa: BLE001  (whatever the user's loss raises)
        raise blamed(f"loss {type(inner.loss).__name__}", "phi_size", err) from err
    if size < 0:
        raise UserCodeError(f"loss {type(inner.loss).__name__}: phi_size gives {size} numbers")
    return size


# --- memory ---------------------------------------------------------------------------------
def batch_bytes(inner: InnerLoop, dims: Dims, k: int, phi: int) -> dict[str, int]:
    """A lower bound on the largest buffers of one batch of ``k`` inner loops, by what they
    hold (a policy that declares no ``hidden`` sizes counts no hidden layers)."""
    t = inner.buffer_size + inner.update_every - 1  # rows of the history
    a_raw = 1 if dims.discrete else dims.act_dim
    policy = inner.policy_for(dims)
    row = dims.obs_dim + dims.act_dim + a_raw + dims.signal_dim + policy.dist_dim(dims) + 5
    hidden = [int(h) for h in getattr(policy, "hidden", ())]
    sizes = [dims.obs_dim, *hidden, dims.act_dim]
    theta = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    history = k * t * row
    adam = 4 * k * theta  # θ, its gradient and Adam's two moments
    activations = 2 * k * t * sum(hidden)  # hidden layers over the history, and their gradients
    return {
        f"the history (K × (N + M − 1) = {k} × {t:,} rows of {row} numbers)": FLOAT * history,
        f"the policies' parameters and Adam state (K × |θ| = {k} × {theta:,})": FLOAT * adam,
        "the policies' activations over the history": FLOAT * activations,
        f"the loss parameters φ (K × |φ| = {k} × {phi:,})": FLOAT * 2 * k * phi,
    }


def available_memory() -> int:
    """Bytes this process may still allocate: the machine's, or its cgroup's if smaller."""
    import psutil

    free = psutil.virtual_memory().available
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free


def _size(n: float) -> str:
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def refuse_if_too_big(
    per_batch: Mapping[str, int], at_once: int, once: Mapping[str, int], where: str
) -> None:
    """Raises a ``ConfigError`` when ``at_once`` batches of ``per_batch`` bytes plus the
    driver's ``once`` bytes exceed the memory available, naming the largest part."""
    parts = {name: at_once * size for name, size in per_batch.items()} | dict(once)
    total, limit = sum(parts.values()), available_memory()
    if total <= limit:
        return
    name, biggest = max(parts.items(), key=lambda item: item[1])
    raise ConfigError(
        f"this run needs at least {_size(total)} of memory, more than the {_size(limit)} "
        f"available: {name} alone takes {_size(biggest)} ({where}); make it smaller"
    )


def check_memory(exp: Any, dims: Dims, phi: int, local: int) -> None:
    """Refuses an evolution whose batches and ES state cannot fit in memory; ``local`` batches
    run at once on this machine (``cluster.local_processes``; 0: the workers are elsewhere)."""
    k = min(exp.batch_size, exp.inner_loops)
    batches = math.ceil(exp.inner_loops / k)
    v = exp.strategy.population
    # The ES draws V directions (float64) and makes V candidates (float32) of |φ| each.
    es = {f"the ES's noise and candidates (V × |φ| = {v} × {phi:,})": 12 * v * phi}
    if local == 0:  # its workers are other machines: only the driver counts
        refuse_if_too_big({}, 0, es, "in this process")
        return
    at_once = min(local, batches)
    where = f"with {at_once} batch(es) of {k} inner loops running at once"
    refuse_if_too_big(batch_bytes(exp.inner, dims, k, phi), at_once, es, where)


# --- the user's code ------------------------------------------------------------------------
_WHY = {
    "non-finite loss": "a non-finite loss (NaN or inf)",
    "non-finite policy parameters": "non-finite policy parameters after one Adam step",
}


def check_policy_shape(inner: InnerLoop) -> None:
    """Refuses a policy whose ``dist`` is not (K, T, dist_dim) as its ``dist_dim`` says: the
    inner loop would fail writing it into its window, in epgkit's code, with a traceback."""
    import torch

    policy, dims = inner.policy, inner.dims()
    name = f"policy {type(policy).__name__}"
    with reported(inner_loop_parts(inner)):
        theta = policy.init(dims, [np.random.default_rng(0)])
        got = tuple(policy.dist(theta, torch.zeros(1, 1, dims.obs_dim)).shape)
        want = (1, 1, policy.dist_dim(dims))
    if got != want:
        raise UserCodeError(
            f"{name}: dist gives a tensor of shape {got} for observations (1, 1, obs_dim); its "
            f"dist_dim says (1, 1, {want[2]}){where_defined(type(policy).dist)}"
        )


def check_code(inner: InnerLoop, phi: np.ndarray, guided: bool, which: str) -> None:
    """Runs ``inner`` for one update of M steps on one task, in this process: with the loss
    alone (α = 0), then, if ``guided``, with the guidance loss alone (α = 1).

    Raises ``UserCodeError`` naming the env or the loss when one raises, or when the loss
    makes that first update non-finite (it would fail every inner loop). ``which`` says which
    φ this is, for the message.
    """
    tiny = dataclasses.replace(
        inner,
        steps=inner.update_every,
        eval_episodes=1,
        eval_max_steps=min(inner.eval_max_steps, TINY_EVAL_STEPS),
    )
    runs = [(0.0, f"loss {type(inner.loss).__name__}")]
    if guided and inner.guide is not None:
        runs.append((1.0, f"guidance loss {type(inner.guide).__name__}"))
    check_policy_shape(inner)
    for alpha, who in runs:
        with reported(inner_loop_parts(inner)):
            (result,) = tiny.run([Job(phi, alpha, task_seed=0, seed=0)])
        if result.failed in _WHY:
            raise UserCodeError(
                f"{who} gives {_WHY[result.failed]} on the first update of one inner loop "
                f"({which}, task 0 of {inner.env_id!r}); every inner loop would fail"
            )


@dataclasses.dataclass(frozen=True)
class Checked:
    """What the checks of an evolution read off its env and loss, for the run's records."""

    dims: Dims
    phi_size: int


def check_experiment(exp: Any, local: int) -> Checked:
    """Every check of an evolution, in order: values, env, memory, the user's code
    (``local``: batches running at once on this machine, as ``check_memory`` takes it)."""
    check_values(exp)
    dims = exp.inner.dims()  # a bad env id, or an env that cannot be built, fails here
    size = phi_size(exp.inner)
    check_memory(exp, dims, size, local)
    rng = np.random.default_rng(np.random.SeedSequence([exp.seed, 0]))  # as evolve draws φ
    with blame(f"loss {type(exp.inner.loss).__name__}", "init_phi"):
        phi0 = exp.inner.init_phi(rng)
    if np.size(phi0) != size:  # the ES would perturb one size and the loss read another
        raise UserCodeError(
            f"loss {type(exp.inner.loss).__name__}: init_phi gives a φ of size {np.size(phi0)}, "
            f"phi_size says {size}"
        )
    check_code(exp.inner, phi0, exp.alpha(0) > 0, "φ from its init_phi")
    return Checked(dims, size)


def check_training(
    exp: Any, loops: Mapping[str, InnerLoop], learned: str, phi: np.ndarray, runs: int,
    local: int,
) -> None:  # fmt: skip
    """Every check of a test-time training of ``loops`` (``learned`` trains with ``phi``;
    ``local`` batches run at once on this machine, 0 if its workers are elsewhere)."""
    check_values(dict(loops))
    # The driver keeps every run's result, a curve point per update, until the summary; a
    # --runs past memory would be found only after minutes of making its jobs.
    kept = runs * sum(RUN_BYTES + POINT_BYTES * (loop.steps // loop.update_every)
                      for loop in loops.values())  # fmt: skip
    what = f"the results of {runs:,} runs × {len(loops)} methods"
    refuse_if_too_big({}, 0, {what: kept}, "kept by this process until the summary")
    dims = loops[learned].dims()
    k = min(exp.batch_size, runs)
    if local:
        at_once = min(local, len(loops) * math.ceil(runs / k))
        where = f"with {at_once} batch(es) of {k} inner loops running at once"
        for name, loop in loops.items():
            size = phi.size if name == learned else 0
            refuse_if_too_big(batch_bytes(loop, dims, k, size), at_once, {}, where)
    for name, loop in loops.items():
        weights = phi if name == learned else np.zeros(0, np.float32)
        check_code(loop, weights, False, f"the {name} method" if name != learned else "its φ")
