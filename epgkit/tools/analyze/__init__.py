"""``epgkit analyze``: look inside a learned loss during test-time training (Section 4.3 and
Appendix B of the paper). Each analysis runs the loss on held-out tasks as ``epgkit train``
does and writes a figure and a JSON file into one folder:

- ``sensitivity``: ‖∂L_t/∂x‖₂ per input kind and row of the window (Figure 21);
- ``gradients``: Spearman's ρ between the learned loss's and PPO's gradients with respect to
  θ on the same batches, per update (the paper reports ρ ≈ 0.5);
- ``kl``: KL between successive policies under the learned loss, PPO and the loss at the
  start of evolution (Figures 16 and 22).

``study`` loads and checks what they share; the first two observe the inner loop through
``InnerLoop.run``'s ``on_update`` hook, which reads the buffer, θ and the loss's state at
every update and changes nothing, so the observed run is the one ``epgkit train`` would make.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from epgkit.tools.analyze.study import Study, prepare

ANALYSES = ("sensitivity", "gradients", "kl")

__all__ = ["ANALYSES", "Study", "headline", "prepare", "run"]


def run(kind: str, study: Study) -> dict[str, Any]:
    """Runs analysis ``kind`` on a prepared study; writes ``<kind>.png`` and ``<kind>.json``."""
    if kind not in ANALYSES:
        raise ValueError(f"unknown analysis {kind!r}; known: {', '.join(ANALYSES)}")
    return importlib.import_module(f"epgkit.tools.analyze.{kind}").analyze(study)


def headline(kind: str, data: dict[str, Any]) -> str:
    """What an analysis found, in a line or two."""
    if kind == "sensitivity":
        totals = ", ".join(f"{x} {v:.3g}" for x, v in data["window_total"].items())
        row = max(range(len(data["features"])), key=lambda i: max(data["matrix"][i]), default=None)
        peak = ""
        if row is not None:
            values = data["matrix"][row]
            where = data["positions"][values.index(max(values))]
            peak = f"largest: {data['features'][row]} at row {where}; "
        return f"{peak}‖∂L_t/∂x‖₂ over the whole window: {totals}"
    if kind == "gradients":
        return (
            f"Spearman ρ(∂L_φ/∂θ, ∂L_PPO/∂θ): mean {data['mean']:.3f}, median "
            f"{data['median']:.3f}, mean |ρ| {data['mean_abs']:.3f} over "
            f"{len(data['per_update'])} updates × {data['runs']} runs "
            f"(paper: ≈ {data['paper']})"
        )
    parts = []
    for name, m in data["methods"].items():
        kl = [v for v in m["kl_mean"] if v is not None and math.isfinite(v)]
        mean_kl = sum(kl) / len(kl) if kl else math.nan
        finals = [f for f in m["final_returns"] if f is not None and math.isfinite(f)]
        final = sum(finals) / len(finals) if finals else math.nan
        parts.append(f"{name}: KL {mean_kl:.2e}, final return {final:.1f}")
    skipped = data["initial_phi"].get("skipped")
    return (
        "mean KL per update and final return — "
        + "; ".join(parts)
        + (f"\nno φ₀ curve: {skipped}" if skipped else "")
    )
