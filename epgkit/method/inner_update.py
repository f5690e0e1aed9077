"""One inner update (Algorithm 2's "every M steps"): the loss of each of the last M steps over
its N-row window, shuffled into minibatches, one Adam step per minibatch on θ and the losses'
own trained state, with the blend of Eq. (10), (1 − α)·L_φ + α·L_pg, per inner loop.

Every trainable tensor of the K inner loops lives in one flat buffer that a hand-written Adam
(``epgkit.method.flat_adam``) updates with a few vector operations; an inner loop whose loss
or parameters turn non-finite is stopped alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from epgkit.method.alive import Alive
from epgkit.method.flat_adam import FlatAdam
from epgkit.method.jobs import Job
from epgkit.method.losses import Batch, History, Loss, LossContext, Update
from epgkit.method.losses.base import check_interface, init_state, needs_logp, prepare
from epgkit.method.mlp import Params
from epgkit.method.policies import Policy
from epgkit.method.user_code import UserCodeError, blame, blamed, where_defined


@dataclass(frozen=True)
class UpdateView:
    """What an observer of an inner loop (``InnerLoop.run(on_update=...)``, e.g.
    ``epgkit.tools.analyze``) sees at every update, once the history is complete and before
    the first Adam step. It must change nothing, nor draw from the seed streams.

    Attributes:
        jobs: The inner loops being run.
        loss: The loss L_φ (not the guide).
        update: What L_φ reads at this update: φ, its state and the whole history.
        policy: The policy.
        theta: θ, (K, ...) per entry.
        failed: Per inner loop, None while it trains, else why it stopped.
    """

    jobs: Sequence[Job]
    loss: Loss
    update: Update
    policy: Policy
    theta: Params
    failed: list[str | None]


class Learner:
    """θ, φ and the trained state of the loss L_φ and the guide L_pg, for K inner loops.

    Args:
        loss: L_φ.
        guide: L_pg, blended in with weight α (Eq. 10), or None.
        ctx: The shapes the losses are built for.
        policy: The policy; ``theta`` its parameters, trained here.
        phi: The loss's φ, (K, P).
        alpha: Each inner loop's α, (K,).
        rngs: Each inner loop's init stream, for the losses' initial state.
        lr: Adam's step size δ_in.
        minibatch: Steps per Adam step.
        passes: Shuffled passes over the last M steps per update.
        reduce: "sum" or "mean" of the per-step losses of a minibatch.
    """

    def __init__(
        self,
        loss: Loss,
        guide: Loss | None,
        ctx: LossContext,
        policy: Policy,
        theta: Params,
        phi: torch.Tensor,
        alpha: np.ndarray,
        rngs: list[np.random.Generator],
        *,
        lr: float,
        minibatch: int,
        passes: int,
        reduce: str,
    ) -> None:
        self.loss, self.guide, self.ctx, self.policy = loss, guide, ctx, policy
        self.theta, self.phi, self.alpha = theta, phi, torch.from_numpy(alpha)
        self.minibatch, self.passes, self.reduce = minibatch, passes, reduce
        # Who is named when the user's code raises.
        self.loss_name = f"loss {type(loss).__name__}"
        self.guide_name = f"guidance loss {type(guide).__name__}"
        check_interface(loss, self.loss_name)
        if guide is not None:
            check_interface(guide, self.guide_name)
        self.use_loss = bool((alpha < 1).any())
        self.use_guide = guide is not None and bool((alpha > 0).any())
        used = [loss] * self.use_loss + [guide] * self.use_guide
        self.needs_history = any(x.needs_history for x in used)
        # log π(a|s) over the whole history costs a few ops per minibatch: only if read.
        self.needs_logp = any(needs_logp(x) for x in used)
        with blame(self.loss_name, "init_state"):
            self.loss_state = init_state(loss, ctx, phi, rngs)
        with blame(self.guide_name, "init_state"):
            self.guide_state = init_state(guide, ctx, phi, rngs) if guide is not None else {}
        # Only what this batch trains: with α = 0 (or 1) for all K, the guide's value net (or
        # the loss's memory) gets no gradient, and Adam would leave it unchanged anyway.
        trained = [theta] + [self.loss_state] * self.use_loss + [self.guide_state] * self.use_guide
        self.opt = FlatAdam(trained, lr)
        self.theta_size = sum(t.numel() for t in theta.values())  # θ comes first

    def update(
        self,
        window_full: History,
        window_recent: History,
        order: np.ndarray,
        alive: Alive,
        observe: Callable[[UpdateView], None] | None = None,
        jobs: Sequence[Job] = (),
    ) -> np.ndarray:
        """One update on the last M steps, in the minibatches of ``order`` (K, passes·M),
        indices into the last M steps; returns KL(π_before ‖ π_after) over them, (K,)."""
        k, m = len(self.alpha), self.ctx.update_every
        if observe is not None:
            view = Update(self.ctx, self.phi, self.loss_state, window_full)
            observe(UpdateView(jobs, self.loss, view, self.policy, self.theta, alive.failed))
        hist = window_full if self.needs_history else window_recent
        first = hist.done.shape[1] - m  # the last M rows start here
        of_loss = Update(self.ctx, self.phi, self.loss_state, hist)
        of_guide = Update(self.ctx, self.phi, self.guide_state, hist)
        with torch.no_grad():
            with blame(self.loss_name, "prepare"):
                prep_loss = prepare(self.loss, of_loss) if self.use_loss else None
            with blame(self.guide_name, "prepare"):
                prep_guide = prepare(self.guide, of_guide) if self.use_guide else None
        live = torch.tensor(alive.mask())
        for s in range(0, order.shape[1], self.minibatch):
            rows = torch.from_numpy(order[:, s : s + self.minibatch] + first)
            pi = self.policy.dist(self.theta, hist.obs)
            logp = self.policy.log_prob(pi, hist.act_raw) if self.needs_logp else None
            per_loop = torch.zeros(k)  # Eq. (10): (1 − α)·L_φ + α·L_pg
            if self.use_loss:
                steps = self._steps(self.loss_name, self.loss, of_loss.batch(pi, logp, rows),
                                    prep_loss)  # fmt: skip
                per_loop = per_loop + (1 - self.alpha) * self._reduce(steps)
            if self.use_guide:
                steps = self._steps(self.guide_name, self.guide, of_guide.batch(pi, logp, rows),
                                    prep_guide)  # fmt: skip
                per_loop = per_loop + self.alpha * self._reduce(steps)
            finite = torch.isfinite(per_loop.detach())
            if not bool(finite.all()):
                alive.stop((~finite).tolist(), "non-finite loss")
                live = live & finite
            self.opt.zero_grad()
            with blame(self.loss_name if self.use_loss else self.guide_name, "the backward pass"):
                torch.where(live, per_loop, torch.zeros_like(per_loop)).sum().backward()
            self.opt.step()
        return self._check(hist, alive)

    def _check(self, hist: History, alive: Alive) -> np.ndarray:
        """KL(π_before ‖ π_after) over the last M steps; stops inner loops whose θ or KL is
        not finite."""
        k, m = len(self.alpha), self.ctx.update_every
        with torch.no_grad():
            after = self.policy.dist(self.theta, hist.obs[:, -m:])
            kl = self.policy.kl(hist.pi_old[:, -m:], after).mean(1).numpy()
            bad = ~np.isfinite(kl)
            if not bool(torch.isfinite(self.opt.data[: self.theta_size]).all()):
                bad |= ~np.all(
                    [torch.isfinite(p.reshape(k, -1)).all(1).numpy() for p in self.theta.values()],
                    0,
                )
        alive.stop(bad.tolist(), "non-finite policy parameters")
        kl[bad] = math.nan  # the KL of a stopped inner loop is recorded as NaN, not ±inf
        return kl

    def _steps(self, who: str, loss: Loss, batch: Batch, prepared: Any) -> torch.Tensor:
        """Per-step losses (K, B) of ``loss`` (the loss or the guide) on ``batch``; what it
        raises, or a result of another shape, is reported naming it (``who``)."""
        try:
            steps = loss(batch, prepared)
        except Exception as err:  # noqa: BLE001  (whatever the user's loss raises)
            raise blamed(who, "__call__", err) from err
        if not isinstance(steps, torch.Tensor) or steps.shape != batch.rows.shape:
            got = (f"a tensor of shape {tuple(steps.shape)}" if isinstance(steps, torch.Tensor)
                   else f"a {type(steps).__name__}")  # fmt: skip
            raise UserCodeError(
                f"{who} returned {got}{where_defined(type(loss).__call__)}; a loss returns one "
                "value per step of the minibatch, "
                f"a tensor of shape {tuple(batch.rows.shape)} (inner loops × steps)"
            )
        return steps

    def _reduce(self, steps: torch.Tensor) -> torch.Tensor:
        return steps.sum(1) if self.reduce == "sum" else steps.mean(1)
