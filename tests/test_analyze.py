"""epgkit analyze: known answers for each analysis, an observer that changes nothing, φ₀ as
evolve draws it, and each subcommand through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from epgkit.method.executor import Serial
from epgkit.method.inner_loop import InnerLoop, Job
from epgkit.method.losses import EPGLoss, PPOLoss
from epgkit.method.mlp import flat_params
from epgkit.method.policies import CategoricalMLP, GaussianMLP
from epgkit.run.launch import prepare as prepare_run
from epgkit.run.launch import run_evolution
from epgkit.run.rundir import BEST_LOSS, RunDirError, load_loss
from epgkit.run.sources import load_source
from epgkit.run.train import build
from epgkit.tools import analyze
from epgkit.tools.analyze import gradients, kl, sensitivity
from epgkit.tools.analyze.study import initial_phi, observe, prepare

ROOT = Path(__file__).resolve().parent.parent


def jobs(inner: InnerLoop, n: int, phi: np.ndarray | None = None) -> list[Job]:
    phi = inner.init_phi(np.random.default_rng(0)) if phi is None else phi
    return [Job(phi, 0.0, task_seed=100 + i, seed=1000 + i, index=i) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class IgnoresActions(EPGLoss):
    """EPGLoss that reads zeros instead of the actions (to test sensitivity)."""

    def prepare(self, update):
        hist = dataclasses.replace(update.hist, act=torch.zeros(update.hist.act.shape))
        return super().prepare(dataclasses.replace(update, hist=hist))


@dataclasses.dataclass(frozen=True)
class ScaledPPO(PPOLoss):
    """PPO's per-step loss times a constant (to test gradient correlations)."""

    scale: float = 1.0

    def __call__(self, batch, targets):
        return self.scale * super().__call__(batch, targets)


# --- gradients --------------------------------------------------------------------------------
def test_spearman_known_answers():
    x = np.array([0.3, -2.0, 5.0, 1.0, 0.0])
    assert gradients.spearman(x, 2 * x + 1) == pytest.approx(1.0)
    assert gradients.spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert gradients.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 − 6·2/60
    assert list(gradients.ranks([3.0, 1.0, 3.0, 2.0])) == [2.5, 0.0, 2.5, 1.0]
    assert math.isnan(gradients.spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(gradients.spearman([1, np.nan, 3], [1, 2, 3]))


def test_ppo_against_itself_has_rho_one_and_its_negation_minus_one(tiny_inner):
    inner = dataclasses.replace(tiny_inner, loss=PPOLoss(), guide=None)
    seen = []

    def compare(at):
        k, t_rows, m = len(at.jobs), at.update.hist.done.shape[1], at.update.ctx.update_every
        rows = torch.arange(t_rows - m, t_rows).expand(k, m)
        args = (at.update, at.policy, at.theta, rows)
        ppo = gradients.policy_gradient(PPOLoss(), *args)
        for scale in (3.0, -0.5):
            scaled = gradients.policy_gradient(ScaledPPO(scale=scale), *args)
            assert torch.allclose(scaled, scale * ppo, rtol=1e-4, atol=1e-7)
            seen.append([gradients.spearman(scaled[i], ppo[i]) for i in range(k)])

    observe(inner, jobs(inner, 2, np.zeros(0, np.float32)), compare)
    assert len(seen) == 2 * inner.steps // inner.update_every
    assert np.allclose(seen[0::2], 1.0) and np.allclose(seen[1::2], -1.0)


def test_the_gradient_observer_finds_ppo_close_to_ppo(tiny_inner):
    ppo = dataclasses.replace(tiny_inner, loss=PPOLoss(), guide=None)
    observer = gradients.GradientCorrelation(ppo, ppo.minibatch)
    observe(ppo, jobs(ppo, 2, np.zeros(0, np.float32)), observer)
    rho = np.array(observer.rho)
    # Its own value net, not the run's: advantages differ a little, the gradients barely.
    assert rho.shape == (4, 2) and rho.min() > 0.9
    policy = ppo.policy_for(ppo.dims())
    theta = policy.init(ppo.dims(), [np.random.default_rng(0)])
    assert observer.theta_size == sum(t[0].numel() for t in theta.values())


def test_observing_changes_nothing(tiny_inner):
    batch = jobs(tiny_inner, 2)
    plain = tiny_inner.run(batch)
    ppo = dataclasses.replace(tiny_inner, loss=PPOLoss(), guide=None)
    for observer in (sensitivity.Sensitivity(), gradients.GradientCorrelation(ppo, ppo.minibatch)):
        watched = observe(tiny_inner, batch, observer)
        for a, b in zip(plain, watched, strict=True):
            assert (a.fitness, a.kl, a.episodes) == (b.fitness, b.kl, b.episodes)


# --- sensitivity ------------------------------------------------------------------------------
def zero_inputs(inner: InnerLoop, phi: np.ndarray, features: list[int]) -> np.ndarray:
    """φ with every weight that reads the given row features (conv 1 and the head) zeroed."""
    loss, ctx = inner.loss, inner.context()
    f, phi = loss.row_size(ctx), phi.copy()
    start = 0
    for name, shape in loss.shapes(ctx).items():
        size = math.prod(shape)
        part = phi[start : start + size].reshape(shape)
        if name == "conv1_w":  # rows: tap · F + feature
            for tap in range(loss.kernels[0]):
                part[[tap * f + i for i in features]] = 0.0
        if name == "head1_w":  # rows: the row's features, then the context
            part[features] = 0.0
        start += size
    return phi


def test_a_loss_has_no_sensitivity_to_what_its_weights_ignore(tiny_inner):
    d = tiny_inner.dims()
    actions = list(range(d.obs_dim, d.obs_dim + d.act_dim))
    memory = list(range(d.obs_dim + d.act_dim + 1, d.obs_dim + d.act_dim + 1 + 32))
    phi = zero_inputs(tiny_inner, tiny_inner.init_phi(np.random.default_rng(0)), actions + memory)
    observer = sensitivity.Sensitivity(per_update=4)
    observe(tiny_inner, jobs(tiny_inner, 2, phi), observer)
    out = observer.summary(tiny_inner.buffer_size)
    assert out["updates"] == tiny_inner.steps // tiny_inner.update_every
    matrix = dict(zip(out["features"], np.array(out["matrix"]), strict=True))
    assert {"s", "a", "d", "π(·|s)", "r"} <= set(matrix) and out["not_read"] == ["t/U"]
    assert (matrix["a"] == 0).all() and out["window_total"]["a"] == 0
    assert out["window_total"]["mem"] == 0
    assert matrix["s"][-1] > 0 and matrix["π(·|s)"].sum() > 0 and out["window_total"]["d"] > 0
    assert len(out["positions"]) == tiny_inner.buffer_size and out["positions"][-1] == 0


def test_an_input_the_loss_never_reads_is_reported_as_not_read(tiny_inner):
    inner = dataclasses.replace(tiny_inner, loss=IgnoresActions(use_progress=True))
    observer = sensitivity.Sensitivity(per_update=2)
    observe(inner, jobs(inner, 1), observer)
    out = observer.summary(inner.buffer_size)
    assert out["not_read"] == ["a"] and "a" not in out["features"]
    assert out["window_total"]["t/U"] > 0 and out["feature_widths"]["t/U"] == 1
    assert out["window_total"]["mem"] > 0 and out["window_total"]["s"] > 0


def test_a_lookahead_loss_is_sensitive_to_the_rows_after_its_step(tiny_inner):
    """Its window starts at the step: the rewards after it are read, up to the buffer's last
    row, past which the loss reads only zeros."""
    loss = EPGLoss(learned_advantage=True, lookahead=True, memory_dim=0)
    inner = dataclasses.replace(tiny_inner, loss=loss)
    observer = sensitivity.Sensitivity(per_update=4)
    observe(inner, jobs(inner, 1), observer)
    out = observer.summary(inner.buffer_size)
    assert out["positions"] == list(range(inner.buffer_size))
    reward = np.array(out["matrix"])[out["features"].index("r")]
    m = inner.update_every
    assert reward[0] > 0 and reward[1:m].sum() > 0 and (reward[m:] == 0).all()


# --- kl ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy,dim", [(GaussianMLP(), 4), (CategoricalMLP(), 3)])
def test_kl_of_a_policy_with_itself_is_zero(policy, dim):
    p = torch.randn(5, 7, dim)
    if isinstance(policy, CategoricalMLP):
        p = torch.log_softmax(p, -1)
    assert torch.equal(policy.kl(p, p), torch.zeros(5, 7))


@pytest.fixture
def study(tmp_path):
    return prepare("kl", "zoo:pointgoal", runs=2, steps=128, out=str(tmp_path / "out"))


def test_a_loss_that_never_moves_the_policy_has_zero_kl(study):
    # φ = 0: the loss is the constant head2_b, so no update changes θ (Adam's step of a zero
    # gradient is zero) and each update's KL is that of a policy with itself.
    frozen = dataclasses.replace(study, jobs=[
        dataclasses.replace(j, phi=np.zeros_like(j.phi)) for j in study.jobs])  # fmt: skip
    results, note = kl.run(frozen)
    assert set(results) == {kl.LEARNED, kl.PPO, kl.INITIAL} and "skipped" not in note
    assert all(r.kl == [0.0] * 4 for r in results[kl.LEARNED])
    assert all(min(r.kl) > 0 for r in results[kl.PPO] + results[kl.INITIAL])


def test_the_initial_loss_curve_is_skipped_with_a_reason_when_phi0_cannot_be_redrawn(study):
    for phi in (np.zeros(0, np.float32), study.source.phi[:-1]):
        other = dataclasses.replace(study, source=dataclasses.replace(study.source, phi=phi))
        jobs0, note = kl.initial_jobs(other)
        assert jobs0 is None and note["skipped"]


def test_initial_phi_is_the_phi_evolve_starts_from(tmp_path):
    path = tmp_path / "run"
    run = prepare_run(["quickstart.gin", "debug.gin"], [f"Launch.run_dir = '{path}'",
                      "Experiment.epochs = 1", "Experiment.alpha_epochs = 0"])  # fmt: skip
    run_evolution(run, Serial(), echo=lambda line: None)
    phi, meta = load_loss(path / BEST_LOSS)
    assert meta["epoch"] == 0  # the best loss of epoch 0 is the φ it evaluated: φ₀
    phi0 = initial_phi(build(load_source(str(path))))
    assert phi0.dtype == phi.dtype and np.array_equal(phi0, phi)


def test_a_loss_evolved_with_its_theta0_is_analysed_from_that_theta0(tmp_path):
    # EPG+I (epg_init.gin): the evolved vector is φ followed by θ₀. Every analysis must start
    # the learned loss's inner loops from θ₀, PPO's from a random θ, and φ₀ from the θ₀ that
    # evolve started from.
    path = tmp_path / "run"
    run = prepare_run(["pointgoal.gin", "extensions/epg_init.gin", "debug.gin"],
                      [f"Launch.run_dir = '{path}'", "Experiment.epochs = 1",
                       "Experiment.alpha_epochs = 0"])  # fmt: skip
    run_evolution(run, Serial(), echo=lambda line: None)
    phi, _ = load_loss(path / BEST_LOSS)  # epoch 0's: φ₀ and θ₀ as evolve drew them
    np.testing.assert_array_equal(initial_phi(build(load_source(str(path)))), phi)
    study = prepare("kl", str(path), runs=1, steps=64, out=str(tmp_path / "out"))
    assert study.learned.evolve_init and not study.ppo.evolve_init
    p = study.learned.loss.phi_size(study.learned.context())
    assert 0 < p < phi.size
    starts = []
    observe(study.learned, study.jobs, lambda seen: starts.append(
        flat_params(seen.theta)[0].detach().numpy().copy()))  # fmt: skip
    np.testing.assert_array_equal(starts[0], phi[p:])  # the first update reads θ₀ itself
    for kind in analyze.ANALYSES:
        data = analyze.run(kind, prepare(kind, str(path), runs=1, steps=64,
                                         out=str(tmp_path / "out")))  # fmt: skip
        assert (tmp_path / "out" / f"{kind}.png").is_file(), kind
    assert set(data["methods"]) == {kl.LEARNED, kl.PPO, kl.INITIAL}  # φ₀ redrawn with θ₀


def test_an_out_folder_that_holds_the_analysis_is_refused(tmp_path):
    (tmp_path / "kl.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds a kl analysis"):
        prepare("kl", "zoo:pointgoal", out=str(tmp_path))
    assert prepare("gradients", "zoo:pointgoal", out=str(tmp_path)).out == tmp_path


def test_an_analysis_stopped_before_its_json_is_done_again_in_the_same_folder(
    tmp_path, monkeypatch
):
    # Stopped while plotting, it left a whole kl.json and no figure, and was refused after.
    def stopped(data, path):
        raise KeyboardInterrupt

    study = prepare("kl", "zoo:pointgoal", runs=1, steps=64, out=str(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(kl, "plot", stopped)
        with pytest.raises(KeyboardInterrupt):
            analyze.run("kl", study)
    assert not (tmp_path / "kl.json").exists()
    analyze.run("kl", prepare("kl", "zoo:pointgoal", runs=1, steps=64, out=str(tmp_path)))
    assert (tmp_path / "kl.json").is_file() and (tmp_path / "kl.png").is_file()


# --- the command line -------------------------------------------------------------------------
def epgkit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epgkit.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=dict(os.environ))  # fmt: skip


@pytest.mark.parametrize("kind", analyze.ANALYSES)
def test_each_analysis_writes_its_figure_and_json_through_the_cli(tmp_path, kind):
    out = tmp_path / "analysis"
    args = ["analyze", kind, "zoo:pointgoal", "--runs", "2", "--steps", "128", "--seed", "3",
            "-b", "InnerLoop.lr = 0.002"]  # fmt: skip
    done = epgkit(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"wrote {out / (kind + '.png')}" in done.stdout
    assert (out / f"{kind}.png").stat().st_size > 10_000
    data = json.loads((out / f"{kind}.json").read_text())
    assert data["env_id"] == "epgkit/PointGoal-v0" and data["runs"] == 2 and data["seed"] == 3
    assert data["steps"] == 128 and len(data["task_seeds"]) == 2
    assert data["bindings"] == ["InnerLoop.lr = 0.002"] and data["lr"] == 0.002
    if kind == "sensitivity":
        assert np.array(data["matrix"]).shape == (len(data["features"]), 64)
        assert data["positions"][-1] == 0 and "mem" in data["window_total"]
    elif kind == "gradients":
        assert len(data["per_update"]) == 4 and -1 <= data["mean"] <= 1
        assert "Spearman" in done.stdout
    else:
        assert set(data["methods"]) == {"epg", "ppo", "epg φ₀"}
        assert all(len(m["kl_mean"]) == 4 for m in data["methods"].values())
    again = epgkit(*args, "--out", str(out))
    assert again.returncode == 2 and "already holds" in again.stderr
    assert "Traceback" not in again.stderr
