"""Hand-designed policy-gradient losses: PPO's clipped surrogate, DPO's drift and REINFORCE.

They have no φ (P = 0) and serve both as the guidance L_pg of Eq. (10) and as like-for-like
baselines, since they run in exactly the same inner loop as the learned loss. PPO and DPO
share everything but the per-step objective: GAE advantages, a value net trained alongside
and an optional entropy bonus (``_ActorCritic``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from epgkit.method import checks
from epgkit.method.dims import Dims
from epgkit.method.losses.base import Batch, LossContext, Update
from epgkit.method.mlp import Params, init_mlp, mlp
from epgkit.registry import register


def _value_net_state(
    ctx: LossContext, hidden: tuple[int, ...], rngs: list[np.random.Generator]
) -> Params:
    """A fresh value net per inner loop, its tensors prefixed ``v_``."""
    return init_mlp((ctx.dims.obs_dim, *hidden, 1), rngs, "v_", 1.0)


def gae(
    reward: torch.Tensor, value: torch.Tensor, done: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Generalized advantage estimates for (K, M) rewards; ``value`` is (K, M + 1).

    No gradient flows through the result (it is a target).
    """
    live = 1.0 - done
    delta = reward + gamma * value[:, 1:] * live - value[:, :-1]
    return torch.from_numpy(_discounted_sums(delta, gamma * lam * live))


def _discounted_sums(x: torch.Tensor, decay: torch.Tensor) -> np.ndarray:
    """y_i = x_i + decay_i · y_(i+1) along dim 1, backwards from y_M = 0.

    The recursion runs in NumPy: M steps of torch ops on (K,) tensors would cost more than
    the rest of an update's bookkeeping.
    """
    x_np, decay_np = x.detach().numpy(), decay.detach().numpy()
    out = np.empty_like(x_np)
    last = np.zeros_like(x_np[:, 0])
    for i in range(x_np.shape[1] - 1, -1, -1):
        last = x_np[:, i] + decay_np[:, i] * last
        out[:, i] = last
    return out


@dataclass(frozen=True)
class Targets:
    """What PPO and DPO prepare once per update: advantages and value targets, (K, M)."""

    adv: torch.Tensor
    ret: torch.Tensor


class _HandDesigned:
    """What a loss without φ (P = 0) answers: nothing to evolve, no input that follows the env."""

    needs_history = False  # they read only the M steps being updated

    def phi_size(self, ctx: LossContext) -> int:
        return 0

    def init_phi(self, ctx: LossContext, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def resolve(self, dims: Dims) -> _HandDesigned:
        return self

    def __post_init__(self) -> None:
        checks.check(self)  # first: the checks below compare numbers
        problems = [msg for bad, msg in self._ranges() if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def _ranges(self) -> list[tuple[bool, str]]:
        """(is it out of range, what to say) for each value with a range."""
        name, gamma = type(self).__name__, self.gamma  # type: ignore[attr-defined]
        return [(not 0 <= gamma <= 1, f"{name}.gamma must be in [0, 1], got {gamma}")]


@dataclass(frozen=True)
class _ActorCritic(_HandDesigned):
    """PPO's machinery around a per-step objective: GAE advantages (standardized per update if
    ``normalize_advantages``), a value net regressed on the returns with weight ``value_coef``,
    and an entropy bonus (``_entropy``). Subclasses are frozen dataclasses that add their own
    fields and give ``objective``, the per-step objective the loss maximizes.

    Termination flags cut the bootstrap; time-limit truncations count as terminations too.
    """

    gamma: float = 0.99
    lam: float = 0.95
    value_hidden: tuple[int, ...] = (64, 64)
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    normalize_advantages: bool = True

    def objective(self, log_ratio: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """The per-step objective (K, B) from log(π/π_old) and the advantages, both (K, B)."""
        raise NotImplementedError

    def _ranges(self) -> list[tuple[bool, str]]:
        name = type(self).__name__
        return [
            *super()._ranges(),
            (not 0 <= self.lam <= 1, f"{name}.lam must be in [0, 1], got {self.lam}"),
            (any(h < 1 for h in self.value_hidden),
             f"{name}.value_hidden sizes must be ≥ 1, got {self.value_hidden}"),
            (self.value_coef < 0, f"{name}.value_coef must be ≥ 0, got {self.value_coef}"),
            (self.entropy_coef < 0, f"{name}.entropy_coef must be ≥ 0, got {self.entropy_coef}"),
        ]  # fmt: skip

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        return _value_net_state(ctx, self.value_hidden, rngs)

    def prepare(self, update: Update) -> Targets:
        """GAE advantages and value targets of the update's M steps; targets, so computed
        without gradients whoever calls."""
        m, hist = update.ctx.update_every, update.hist
        with torch.no_grad():
            obs = torch.cat([hist.obs[:, -m:], hist.next_obs.unsqueeze(1)], dim=1)
            value = mlp(update.state, "v_", obs).squeeze(-1)
            adv = gae(hist.reward_scaled[:, -m:], value, hist.done[:, -m:], self.gamma, self.lam)
            ret = adv + value[:, :-1]
            if self.normalize_advantages:
                adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        return Targets(adv, ret)

    def __call__(self, batch: Batch, targets: Targets) -> torch.Tensor:
        recent, hist = batch.recent, batch.hist
        adv = targets.adv.gather(1, recent)
        objective = self.objective(batch.at_rows(batch.logp) - batch.at_rows(hist.logp_old), adv)
        value = mlp(batch.state, "v_", batch.at_rows(hist.obs)).squeeze(-1)
        loss = -objective + self.value_coef * (value - targets.ret.gather(1, recent)).square()
        if self.entropy_coef:
            loss = loss - self.entropy_coef * _entropy(batch)
        return loss


def _entropy(batch: Batch) -> torch.Tensor:
    """H(π(·|s)) at the batch's rows up to a constant: −Σ p log p of a categorical (π is its
    probabilities), Σ log σ of a diagonal Gaussian (π is its mean, then its log-std)."""
    pi, dims = batch.at_rows(batch.pi), batch.ctx.dims
    if dims.discrete:
        return -(pi * torch.log(pi.clamp_min(1e-8))).sum(-1)
    return pi[..., dims.act_dim :].sum(-1)


@register("loss")
@dataclass(frozen=True)
class PPOLoss(_ActorCritic):
    """PPO's clipped surrogate with GAE and a value net trained alongside (Schulman 2017).

    Attributes:
        clip: Ratio clipping ε.
        gamma: Discount.
        lam: GAE λ.
        value_hidden: Hidden sizes of the value net.
        value_coef: Weight of the value regression in the per-step loss.
        entropy_coef: Weight of an entropy bonus.
        normalize_advantages: Standardize advantages over each update's M steps.
    """

    clip: float = 0.2

    def _ranges(self) -> list[tuple[bool, str]]:
        return [*super()._ranges(), (self.clip <= 0, f"PPOLoss.clip must be > 0, got {self.clip}")]

    def objective(self, log_ratio: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """min(r·A, clip(r, 1 − ε, 1 + ε)·A)."""
        ratio = torch.exp(log_ratio)
        return torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)


def dpo_drift(
    log_ratio: torch.Tensor, adv: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """DPO's drift (Lu et al. 2022) for r = π/π_old = exp(``log_ratio``) and advantages A:
    ReLU((r − 1)·A − α·tanh((r − 1)·A / α)) where A ≥ 0,
    ReLU(log(r)·A − β·tanh(log(r)·A / β)) where A < 0.

    x − c·tanh(x / c) is negative for x < 0 and grows like x³/(3c²) from 0, so the drift is
    zero at r = 1, never negative, and flat near r = 1: small policy changes go unpenalized.
    """
    up = (torch.exp(log_ratio) - 1) * adv
    down = log_ratio * adv
    return torch.where(
        adv >= 0,
        torch.relu(up - alpha * torch.tanh(up / alpha)),
        torch.relu(down - beta * torch.tanh(down / beta)),
    )


@register("loss")
@dataclass(frozen=True)
class DPOLoss(_ActorCritic):
    """Discovered Policy Optimisation (Lu et al. 2022, "Discovered Policy Optimisation",
    NeurIPS, arXiv:2210.05639): the closed form the authors distilled from the drift function
    LPO meta-learned with ES, in place of PPO's clipping. It maximizes r·A − drift(r, A) per
    step (``dpo_drift``) inside PPO's machinery, the same as ``PPOLoss`` otherwise.

    Where the constants come from: α = 2 and β = 0.6 are DPO's published values; the drift and
    the constants were checked term by term against the first author's re-implementation,
    PureJaxRL's ``purejaxrl/dpo_continuous_action.py`` (``DPO_ALPHA = 2.0``,
    ``DPO_BETA = 0.6``); the paper's own text was not at hand to check against. That code
    standardizes advantages per minibatch; here they are standardized per update, as
    ``PPOLoss`` does, so that the two baselines differ only in the objective.

    Attributes:
        alpha: DPO's α, the scale of the drift where A ≥ 0 (not the guidance weight α of
            Eq. (10)).
        beta: DPO's β, the scale of the drift where A < 0.
        gamma: Discount.
        lam: GAE λ.
        value_hidden: Hidden sizes of the value net.
        value_coef: Weight of the value regression in the per-step loss.
        entropy_coef: Weight of an entropy bonus.
        normalize_advantages: Standardize advantages over each update's M steps.
    """

    alpha: float = 2.0
    beta: float = 0.6

    def _ranges(self) -> list[tuple[bool, str]]:
        bad = not (self.alpha > 0 and self.beta > 0)
        return [*super()._ranges(), (bad, f"DPOLoss: alpha and beta must be positive, got "
                                          f"alpha={self.alpha}, beta={self.beta}")]  # fmt: skip

    def objective(self, log_ratio: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """r·A − drift(r, A)."""
        return torch.exp(log_ratio) * adv - dpo_drift(log_ratio, adv, self.alpha, self.beta)


@register("loss")
@dataclass(frozen=True)
class ReinforceLoss(_HandDesigned):
    """REINFORCE (Williams 1992): −G_t · log π(a_t|s_t), with G_t the discounted return to go
    inside the update window, standardized per update.

    Attributes:
        gamma: Discount.
    """

    gamma: float = 0.99

    def init_state(
        self, ctx: LossContext, phi: torch.Tensor, rngs: list[np.random.Generator]
    ) -> Params:
        return {}

    def prepare(self, update: Update) -> torch.Tensor:
        """The standardized returns to go of the update's M steps (targets: no gradient)."""
        m, hist = update.ctx.update_every, update.hist
        with torch.no_grad():
            reward, done = hist.reward_scaled[:, -m:], hist.done[:, -m:]
            ret = torch.from_numpy(_discounted_sums(reward, self.gamma * (1.0 - done)))
            return (ret - ret.mean(1, keepdim=True)) / (ret.std(1, keepdim=True) + 1e-8)

    def __call__(self, batch: Batch, ret: torch.Tensor) -> torch.Tensor:
        return -ret.gather(1, batch.recent) * batch.at_rows(batch.logp)
