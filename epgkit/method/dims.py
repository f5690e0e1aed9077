"""The sizes that losses and policies are built for, read off an environment."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from epgkit.envs import loss_view
from epgkit.errors import ConfigError


@dataclass(frozen=True)
class Dims:
    """What a policy and a loss need to know about an env's spaces.

    Attributes:
        obs_dim: Size of the flat observation.
        act_dim: Action size (Box) or number of actions (Discrete).
        discrete: Whether actions are categorical.
        signal_dim: Size of the env's privileged task signal (0 when it has none).
        reward_in_loss: Whether the env's family gives the reward to the loss (Table 1).
        act_low: Lower action bounds (Box only), used to clip sampled actions.
        act_high: Upper action bounds (Box only).
    """

    obs_dim: int
    act_dim: int
    discrete: bool
    signal_dim: int = 0
    reward_in_loss: bool = True
    act_low: tuple[float, ...] = ()
    act_high: tuple[float, ...] = ()

    @property
    def action_space(self) -> str:
        """The action space in gymnasium's words, for messages."""
        return f"Discrete({self.act_dim})" if self.discrete else f"Box of shape ({self.act_dim},)"

    @classmethod
    def of(cls, env: gym.Env) -> Dims:
        """Reads the dims of ``env``.

        Raises:
            ConfigError: The observation space is not a flat Box, or the action space neither a
                flat Box nor a Discrete space starting at 0 (the spaces epgkit's policies handle).
        """
        obs, act = env.observation_space, env.action_space
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
            raise ConfigError(
                f"{name}'s observation space {obs} is not supported: epgkit needs a flat Box "
                "(shape (n,))"
            )
        reward_in_loss, signal_dim = loss_view(env)
        if isinstance(act, gym.spaces.Discrete) and int(act.start) == 0:
            return cls(obs.shape[0], int(act.n), True, signal_dim, reward_in_loss)
        if isinstance(act, gym.spaces.Box) and len(act.shape) == 1:
            low, high = (tuple(np.asarray(b, dtype=float).tolist()) for b in (act.low, act.high))
            return cls(obs.shape[0], act.shape[0], False, signal_dim, reward_in_loss, low, high)
        raise ConfigError(
            f"{name}'s action space {act} is not supported: epgkit needs a Box of shape (n,) "
            "(GaussianMLP) or a Discrete space starting at 0 (CategoricalMLP)"
        )
