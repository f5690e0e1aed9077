"""Loss-input sensitivity (Appendix B, Figure 21): ‖∂L_t/∂x‖₂ of the learned loss of step t
with respect to each kind of input x at each row of the N-row window ending at t (starting at
t for a loss that reads ahead, ``EPGLoss.lookahead``).

During a test-time run (α = 0), at every update a few of the M steps being updated on are
picked (evenly spaced, no random draw), the loss is evaluated on them with every input a leaf
of its own, and each step's loss is differentiated alone. The inputs are the buffer's rows as
the loss reads them — s, a, d, r, the task signal and t/U from the history, π(·|s) (and log π(a|s))
recomputed from θ but differentiated as inputs, not through θ — so the gradient with respect
to s is the loss's direct use of s. The memory unit's output mem = tanh(mem_w + mem_b) is the
same vector at every row, so it has one sensitivity for the whole window, not one per row.
An input the loss never reads has no gradient at all and is listed as not read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from epgkit.method.inner_loop import UpdateView
from epgkit.method.losses.base import needs_logp, prepare
from epgkit.tools.analyze.study import Study, observe, save_figure, write_json

# The per-row inputs in Figure 2's row order (mem aside): name, History field or None for the
# two that are recomputed from θ at the update.
ROW_INPUTS = (
    ("s", "obs"),
    ("a", "act"),
    ("d", "done"),
    ("π(·|s)", None),
    ("r", "reward"),
    ("task signal", "signal"),
    ("t/U", "progress"),
    ("log π(a|s)", None),
)
MEMORY = "mem"


class Sensitivity:
    """An ``on_update`` observer that sums ‖∂L_t/∂x‖₂ per input, window row and inner loop.

    Args:
        per_update: How many of each update's M steps are differentiated (evenly spaced).
    """

    def __init__(self, per_update: int = 8) -> None:
        self.per_update = per_update
        self.sums: dict[str, np.ndarray] = {}  # input → (K, N): Σ over samples of the norms
        self.totals: dict[str, np.ndarray] = {}  # input → (K,): Σ of the whole-window norms
        self.counts = np.zeros(0)  # (K,): samples per inner loop
        self.widths: dict[str, int] = {}  # input → its number of features
        self.updates = 0
        self.ahead = False  # whether the windows start at their step instead of ending there

    def _leaves(self, seen: UpdateView) -> dict[str, torch.Tensor]:
        """Every per-row input the loss may read, as a fresh leaf (K, T, ...)."""
        hist = seen.update.hist
        with torch.no_grad():
            pi = seen.policy.dist(seen.theta, hist.obs)
            logp = seen.policy.log_prob(pi, hist.act_raw) if needs_logp(seen.loss) else None
        leaves = {}
        for name, field in ROW_INPUTS:
            value = getattr(hist, field) if field else {"π(·|s)": pi, "log π(a|s)": logp}[name]
            if value is not None and value[0, 0].numel():  # none: no task signal, no t/U
                leaves[name] = value.detach().clone().requires_grad_()
                self.widths[name] = value[0, 0].numel()
        return leaves

    def __call__(self, seen: UpdateView) -> None:
        ctx, hist = seen.update.ctx, seen.update.hist
        k, t_rows = hist.done.shape
        n, m = ctx.buffer_size, ctx.update_every
        self.ahead = bool(getattr(seen.loss, "lookahead", False))
        leaves = self._leaves(seen)
        view = dataclasses.replace(
            hist, **{f: leaves[x] for x, f in ROW_INPUTS if f is not None and x in leaves}
        )
        state = {name: t.detach() for name, t in seen.update.state.items()}
        # The memory unit (EPGLoss, Eq. 6): mem = tanh(mem_w·1 + mem_b), so ∂L/∂mem is
        # ∂L/∂mem_b divided by tanh' at the same point.
        memory = "mem_w" in state and "mem_b" in state
        if memory:
            state["mem_b"] = state["mem_b"].clone().requires_grad_()
            slope = 1 - torch.tanh(state["mem_w"] + state["mem_b"]).detach().square()
            self.widths[MEMORY] = state["mem_b"][0].numel()

        picks = np.linspace(t_rows - m, t_rows - 1, min(self.per_update, m)).round()
        picks = np.unique(picks).astype(np.int64)
        rows = torch.from_numpy(picks).expand(k, -1)
        # Prepared with gradients, from the leaves: what the loss reuses across minibatches
        # (EPGLoss's data share of its convolution) is part of each step's dependence on them.
        update = dataclasses.replace(seen.update, state=state, hist=view)
        batch = update.batch(leaves.get("π(·|s)"), leaves.get("log π(a|s)"), rows)
        losses = seen.loss(batch, prepare(seen.loss, update))
        names = list(leaves)
        inputs = [leaves[x] for x in names] + ([state["mem_b"]] if memory else [])
        alive = np.array([f is None for f in seen.failed])
        if not len(self.counts):
            self.counts = np.zeros(k)
        for j, row in enumerate(picks.tolist()):
            grads = torch.autograd.grad(
                losses[:, j].sum(), inputs, allow_unused=True, retain_graph=j < len(picks) - 1
            )
            for name, grad in zip(names, grads[: len(names)], strict=True):
                if grad is None:
                    continue  # the loss does not read this input
                grad = grad.reshape(k, t_rows, -1)
                if self.ahead:  # the rows past the buffer's last are the loss's zeros
                    window = F.pad(grad[:, row : row + n], (0, 0, 0, max(0, row + n - t_rows)))
                else:
                    window = grad[:, row - n + 1 : row + 1]
                norms = np.where(alive[:, None], window.norm(dim=-1).double().numpy(), 0.0)
                self.sums[name] = self.sums.get(name, 0) + norms
                self.totals[name] = self.totals.get(name, 0) + np.sqrt((norms**2).sum(1))
            if memory and grads[-1] is not None:
                mem = (grads[-1] / slope).reshape(k, -1).norm(dim=-1).double().numpy()
                self.totals[MEMORY] = self.totals.get(MEMORY, 0) + np.where(alive, mem, 0.0)
            self.counts += alive
        self.updates += 1

    def summary(self, buffer_size: int) -> dict[str, Any]:
        """Means over runs, updates and steps: the (inputs × rows) matrix and per-input totals.

        Inner loops that failed before their first update are left out.
        """
        used, counts = self.counts > 0, np.maximum(self.counts, 1)
        read = [x for x, _ in ROW_INPUTS if x in self.sums]
        per_run = np.stack([self.sums[x] / counts[:, None] for x in read], 1) if read else None
        matrix = per_run[used].mean(0) if read else np.zeros((0, buffer_size))
        return {
            "features": read,
            "feature_widths": self.widths,
            "positions": list(range(buffer_size) if self.ahead else range(1 - buffer_size, 1)),
            "matrix": matrix.tolist(),
            "per_run": per_run.tolist() if read else [],
            "window_total": {x: float((t / counts)[used].mean()) for x, t in self.totals.items()},
            "not_read": [x for x, _ in ROW_INPUTS if x in self.widths and x not in self.sums]
            + ([MEMORY] if MEMORY in self.widths and MEMORY not in self.totals else []),
            "updates": self.updates,
            "steps_per_update": self.per_update,
        }


def analyze(study: Study, per_update: int = 8) -> dict[str, Any]:
    """Runs the study's tasks with the learned loss; writes sensitivity.json and .png."""
    observer = Sensitivity(per_update)
    results = observe(study.learned, study.jobs, observer)
    data = {
        **study.info,
        "how": "mean over runs, updates and the differentiated steps of ‖∂L_t/∂x‖₂, x an "
        "input at row t + position of the step's window (position 0: the step itself)",
        **observer.summary(study.learned.buffer_size),
        "failed_runs": [r.failed for r in results if r.failed],
    }
    # The figure first: the json marks a finished analysis (a stopped one is done again).
    plot(data, study.out / "sensitivity.png")
    write_json(study, "sensitivity", data)
    return data


def plot(data: dict[str, Any], path: Path) -> Path:
    """Heatmap of inputs × window rows (log colours; grey is exactly 0), and each input's
    sensitivity over the whole window beside it, mem included."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import NullFormatter

    matrix = np.array(data["matrix"], float).reshape(len(data["features"]), -1)
    totals = data["window_total"]
    fig, (ax, side) = plt.subplots(
        1, 2, figsize=(11, 1.6 + 0.45 * max(len(totals), 3)), width_ratios=(4, 1.3)
    )
    positive = matrix[matrix > 0]
    if positive.size:
        top = positive.max()
        norm = LogNorm(max(positive.min(), top * 1e-4), top)
        cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
        shown = np.ma.masked_less_equal(matrix, 0)
        first, last = data["positions"][0], data["positions"][-1]
        image = ax.imshow(
            shown,
            aspect="auto",
            cmap=cmap,
            norm=norm,
            interpolation="nearest",
            extent=(first - 0.5, last + 0.5, len(matrix) - 0.5, -0.5),
        )
        bar = fig.colorbar(image, ax=ax, pad=0.01)
        bar.set_label("‖∂L_t / ∂x‖₂", fontsize=8)
    widths = data["feature_widths"]
    ax.set_yticks(range(len(matrix)), [f"{x} ({widths.get(x, '?')})" for x in data["features"]])
    ax.set_title(
        f"Loss input sensitivity (Figure 21): {data['loss']} on {data['env_id']}, "
        f"{data['runs']} runs × {data['updates']} updates",
        fontsize=9,
    )
    names = [x for x in [*data["features"], MEMORY] if x in totals]
    values = [totals[x] for x in names]
    side.barh(range(len(names)), values, color="tab:blue")
    side.set_yticks(range(len(names)), names)
    side.invert_yaxis()
    positive_values = [v for v in values if v > 0]
    if positive_values and max(positive_values) > 50 * min(positive_values):
        side.set_xscale("log")
        side.xaxis.set_minor_formatter(NullFormatter())
    side.set_title("whole window", fontsize=9)
    side.set_xlabel("‖∂L_t / ∂x‖₂", fontsize=8)
    side.grid(alpha=0.3, axis="x")
    notes = ["grey: exactly 0 (a row no convolution window reaches, or an ignored input)"]
    if data["not_read"]:
        notes.append("not read by the loss: " + ", ".join(data["not_read"]))
    ax.set_xlabel(
        "row of the window, relative to the step t (0 = t)\n" + "; ".join(notes), fontsize=9
    )
    return save_figure(fig, path)
