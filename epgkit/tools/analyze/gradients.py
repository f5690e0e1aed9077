"""How the learned loss's policy gradient relates to PPO's (Section 4.3: Spearman's ρ ≈ 0.5).

During a test-time run trained by the learned loss (α = 0), at every update, before its first
Adam step, both losses are differentiated with respect to θ on the same batch — the update's M
steps, with the same history and the same θ — and Spearman's rank correlation of the two
gradients (every entry of θ, log-std included) is taken per inner loop. The loss being
minimized, each is the direction its loss would move θ in.

PPO needs a value net for its advantages (GAE); as in a PPO run, one is trained alongside, on
each update's M steps after the gradients are taken, with the PPO baseline's step size and
passes, minibatches in order. It never touches θ, so the run is the learned loss's own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epgkit.method.flat_adam import FlatAdam
from epgkit.method.inner_loop import InnerLoop, UpdateView
from epgkit.method.losses import Loss, Update
from epgkit.method.losses.base import needs_logp, prepare
from epgkit.method.mlp import Params
from epgkit.method.policies import Policy
from epgkit.tools.analyze.study import Study, observe, save_figure, write_json

PAPER_RHO = 0.5  # "around ρ = 0.5 (Spearman's rank correlation coefficient)"


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1 of a vector; tied values share the mean of their ranks."""
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    stops = np.r_[starts[1:], len(x)]
    out = np.empty(len(x))
    out[order] = np.repeat((starts + stops - 1) / 2, stops - starts)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (NaN if one is constant
    or either holds a non-finite value)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / scale) if scale > 0 else math.nan


def policy_gradient(
    loss: Loss, update: Update, policy: Policy, theta: Params, rows: torch.Tensor
) -> torch.Tensor:
    """∂/∂θ of ``loss`` summed over the steps at ``rows``, one flat row per inner loop (K, |θ|).

    Gradients only are computed: nothing is stepped, and no ``.grad`` is touched.
    """
    with torch.no_grad():
        prepared = prepare(loss, update)
    pi = policy.dist(theta, update.hist.obs)
    logp = policy.log_prob(pi, update.hist.act_raw) if needs_logp(loss) else None
    total = loss(update.batch(pi, logp, rows), prepared).sum()
    params = list(theta.values())
    grads = torch.autograd.grad(total, params, allow_unused=True)
    k = rows.shape[0]
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(k, -1)
            for p, g in zip(params, grads, strict=True)
        ],
        dim=1,
    )


class GradientCorrelation:
    """An ``on_update`` observer: ρ between the learned loss's and PPO's gradients per update.

    Args:
        ppo: The PPO baseline inner loop: its loss, step size and passes train the value net.
        minibatch: Steps per Adam step of the value net (the observed inner loop's).
    """

    def __init__(self, ppo: InnerLoop, minibatch: int) -> None:
        self.ppo, self.minibatch = ppo, minibatch
        self.rho: list[list[float]] = []  # per update, per inner loop
        self.value: Params | None = None
        self.opt: FlatAdam | None = None
        self.theta_size = 0

    def __call__(self, seen: UpdateView) -> None:
        ctx, hist, k = seen.update.ctx, seen.update.hist, len(seen.jobs)
        if self.value is None:
            # The value net's own seeds: the run's streams are left exactly as they were.
            rngs = [
                np.random.default_rng(np.random.SeedSequence([j.seed, 0x9AD])) for j in seen.jobs
            ]
            self.value = self.ppo.loss.init_state(ctx, torch.zeros(k, 0), rngs)
            self.opt = FlatAdam([self.value], self.ppo.lr)
        t_rows, m = hist.done.shape[1], ctx.update_every
        rows = torch.arange(t_rows - m, t_rows).expand(k, m)
        learned = policy_gradient(seen.loss, seen.update, seen.policy, seen.theta, rows)
        of_ppo = Update(ctx, torch.zeros(k, 0), self.value, hist)
        ppo = policy_gradient(self.ppo.loss, of_ppo, seen.policy, seen.theta, rows)
        self.theta_size = learned.shape[1]
        alive = [f is None for f in seen.failed]
        self.rho.append(
            [
                spearman(learned[i].numpy(), ppo[i].numpy()) if alive[i] else math.nan
                for i in range(k)
            ]
        )
        self._fit_value(seen, of_ppo, rows)

    def _fit_value(self, seen: UpdateView, of_ppo: Update, rows: torch.Tensor) -> None:
        """PPO's per-step loss on the update's steps, minibatches in order; only the value net
        has a gradient (π is computed without one)."""
        loss, hist, size = self.ppo.loss, of_ppo.hist, self.minibatch
        with torch.no_grad():
            prepared = prepare(loss, of_ppo)
            pi = seen.policy.dist(seen.theta, hist.obs)
            logp = seen.policy.log_prob(pi, hist.act_raw)
        for _ in range(self.ppo.passes):
            for s in range(0, rows.shape[1], size):
                self.opt.zero_grad()
                steps = loss(of_ppo.batch(pi, logp, rows[:, s : s + size]), prepared)
                torch.nan_to_num(steps).sum().backward()
                self.opt.step()


def analyze(study: Study) -> dict[str, Any]:
    """Runs the study's tasks with the learned loss; writes gradients.json and .png."""
    observer = GradientCorrelation(study.ppo, study.learned.minibatch)
    results = observe(study.learned, study.jobs, observer)
    rho = np.array(observer.rho, float)  # (updates, runs)
    finite = rho[np.isfinite(rho)]
    with np.errstate(all="ignore"):
        per_update = [float(np.nanmean(r)) if np.isfinite(r).any() else math.nan for r in rho]
        per_run = [float(np.nanmean(c)) if np.isfinite(c).any() else math.nan for c in rho.T]
    data = {
        **study.info,
        "how": "Spearman's ρ between ∂L_φ/∂θ and ∂L_PPO/∂θ, both on the update's M steps at "
        "θ before the update, per inner loop; the run is trained by the learned loss (α = 0)",
        "ppo": repr(study.ppo.loss),
        "theta_size": observer.theta_size,
        "mean": float(finite.mean()) if finite.size else math.nan,
        "median": float(np.median(finite)) if finite.size else math.nan,
        # Large when the two agree or disagree strongly on each update, whatever the sign.
        "mean_abs": float(np.abs(finite).mean()) if finite.size else math.nan,
        "per_run_mean": per_run,
        "per_update": [
            {"update": u, "mean": per_update[u], "rho": rho[u].tolist()} for u in range(len(rho))
        ],
        "paper": PAPER_RHO,
        "failed_runs": [r.failed for r in results if r.failed],
    }
    # The figure first: the json marks a finished analysis (a stopped one is done again).
    plot(data, study.out / "gradients.png")
    write_json(study, "gradients", data)
    return data


def plot(data: dict[str, Any], path: Path) -> Path:
    """ρ against update: every run thin, the mean over runs thick, the paper's ≈ 0.5 dashed."""
    import matplotlib.pyplot as plt

    rows = data["per_update"]
    updates = [r["update"] + 1 for r in rows]
    rho = np.array([[math.nan if v is None else v for v in r["rho"]] for r in rows], float)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i in range(rho.shape[1]):
        ax.plot(
            updates,
            rho[:, i],
            color="tab:blue",
            alpha=0.35,
            linewidth=0.8,
            label="each run" if i == 0 else None,
        )
    ax.plot(
        updates,
        [r["mean"] for r in rows],
        color="tab:blue",
        linewidth=2,
        label=f"mean over runs (overall {data['mean']:.2f})",
    )
    ax.axhline(
        data["paper"],
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"paper: ρ ≈ {data['paper']}",
    )
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("policy update")
    ax.set_ylabel("Spearman ρ(∂L_φ/∂θ, ∂L_PPO/∂θ)")
    ax.set_title(
        f"Learned-loss vs PPO gradients: {data['loss']} on {data['env_id']}, {data['runs']} runs",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)
