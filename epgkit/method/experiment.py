"""The one gin root of the method: an experiment is an inner loop, an ES and a schedule.

Gin builds this object in the driver process; everything it holds is a plain frozen dataclass,
so Dask workers receive ordinary picklable objects and never read gin. Where it runs is not
part of it (``epgkit.run.cluster.Launch``): its results do not depend on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gin

from epgkit.method import checks
from epgkit.method.inner_loop import InnerLoop
from epgkit.method.past_init import PastInit
from epgkit.method.strategies import OpenES, Strategy


@gin.configurable
@dataclass(frozen=True)
class Experiment:
    """An EPG evolution (Algorithm 1).

    Attributes:
        inner: The inner loop every worker runs (env, loss, guidance, policy, U, M, N).
        strategy: The outer optimizer (``epgkit list strategies``); its population is V, the
            number of candidates per epoch.
        epochs: E, outer-loop epochs.
        inner_loops: W, inner loops per epoch; each of the V perturbations is evaluated on
            W/V tasks and its fitness is their mean.
        alpha_epochs: Epochs over which the guidance weight α anneals linearly 1 → 0
            (Eq. 10; paper: 500 of 5000). 0 turns guidance off.
        batch_size: Inner loops run in lockstep by one Dask task (K). Part of the
            determinism contract: the same seed and K give the same bits on any number of
            workers. Another K gives the same results only up to rounding (the CPU's BLAS may
            pick another kernel for another batch size), which ES ranks can then amplify.
        seed: Root seed of every random draw of the run.
        baselines: Hand-designed losses that test-time training compares with, by name: inner
            loops identical to ``inner`` except for their loss and its tuning (gin scopes,
            e.g. ``ppo/InnerLoop.lr``), so comparisons are like for like.
        past_init: Initialization from past policies (Figure 12B): some inner loops start
            from the final θ of inner loops of earlier epochs (``@PastInit()``,
            gin/extensions/past_init.gin); None: every inner loop starts from a fresh θ.
        init_loss: A loss whose φ starts the ES instead of the loss's own random φ: a run
            directory (its best loss), a loss file or ``zoo:NAME``, evolved with the same loss
            architecture (same |φ|). For carrying a loss on in another setting (another δ_in,
            U or task family) rather than starting over. Read once, when the run starts;
            a resumed run continues from its checkpoint.
        fitness_curve: Weight w of the learning curve in what the ES maximizes: per inner loop
            (1 − w)·(final evaluation return) + w·(the mean return of its training episodes,
            each weighted by its length: the area under the learning curve per env step).
            0, the paper's fitness, rewards only where a policy ends; w > 0 also rewards
            getting there sooner. ``metrics.jsonl``'s ``fitness_*`` stay the final returns,
            with ``curve_mean`` and ``objective_mean`` beside them; the best loss is the one
            of the best ``objective_mean``.
    """

    inner: InnerLoop = field(default_factory=InnerLoop)
    strategy: Strategy = field(default_factory=OpenES)
    epochs: int = 100
    inner_loops: int = 256
    alpha_epochs: int = 500
    batch_size: int = 8
    seed: int = 0
    baselines: dict[str, InnerLoop] = field(default_factory=dict)
    past_init: PastInit | None = None
    init_loss: str | None = None
    fitness_curve: float = 0.0

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        v, w = self.strategy.population, self.inner_loops
        problems = [
            f"epochs must be ≥ 1, got {self.epochs}" if self.epochs < 1 else "",
            f"seed must be ≥ 0, got {self.seed}" if self.seed < 0 else "",
            f"inner_loops (W={w}) must be a positive multiple of the ES population (V={v})"
            if w < 1 or w % v
            else "",
            f"batch_size must be ≥ 1, got {self.batch_size}" if self.batch_size < 1 else "",
            f"alpha_epochs must be ≥ 0, got {self.alpha_epochs}" if self.alpha_epochs < 0 else "",
            f"fitness_curve must be in [0, 1], got {self.fitness_curve}"
            if not 0 <= self.fitness_curve <= 1
            else "",
        ]
        checks.refuse("Experiment", problems)

    def alpha(self, epoch: int) -> float:
        """Guidance weight α at ``epoch`` (0-based)."""
        if self.inner.guide is None or self.alpha_epochs == 0:
            return 0.0
        return max(0.0, 1.0 - epoch / self.alpha_epochs)
