"""Env ids: whether one names a task family, and the hint an unknown one gets.

Gymnasium's ids come in two forms, ``Name-v0`` and ``module:Name-v0`` (the module registers
the env when imported); both are accepted wherever epgkit takes an env id.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pickle
from collections.abc import Iterable, Mapping

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from epgkit.envs import registered
from epgkit.errors import ConfigError
from epgkit.method.user_code import describe


def takes_task_seed(env_id: str) -> bool:
    """Whether ``env_id`` is a task family, i.e. its env creator takes a ``task_seed``.

    Raises:
        ConfigError: ``env_id`` names a module that cannot be imported, is not registered, or
            its entry point cannot be loaded (messages name the id and close registered ids).
    """
    parameters = _parameters(env_id)
    return parameters is not None and "task_seed" in parameters


def check_env_kwargs(env_id: str, names: Iterable[str]) -> None:
    """Refuses ``InnerLoop.env_kwargs`` names the env's creator does not take (a misspelt
    keyword is the config's mistake, not the env's failure).

    Raises:
        ConfigError: An unknown name, with the creator's parameters; or as ``takes_task_seed``.
    """
    parameters = _parameters(env_id)
    if parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return  # any keyword may be right: the env itself says
    spec_kwargs = gym.spec(env_id.rpartition(":")[2]).kwargs
    unknown = [n for n in names if n not in parameters]
    if unknown:
        known = [p for p in parameters if p not in (*spec_kwargs, "self", "task_seed")]
        raise ConfigError(
            f"InnerLoop.env_kwargs: env {env_id!r} takes no {', '.join(map(repr, unknown))}"
            + (f"; it takes {', '.join(known)}" if known else "")
            + _close(unknown[0], known)
        )


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f". Did you mean {', '.join(close)}?" if close else ""


def _parameters(env_id: str) -> Mapping[str, inspect.Parameter] | None:
    """The parameters of ``env_id``'s creator (None when they cannot be read)."""
    module, _, name = env_id.rpartition(":")
    if module:  # gymnasium's "module:Name-v0" form: the module registers the env
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"env id {env_id!r}: module {module!r} cannot be imported ({err})"
            ) from err
        except Exception as err:  # noqa: BLE001  (whatever the user's module raises)
            raise ConfigError(
                f"env id {env_id!r}: module {module!r} raised an error when imported: "
                f"{describe(err)}"
            ) from err
    try:
        entry = gym.spec(name).entry_point
    except gym.error.Error as err:
        raise ConfigError(f"env id {env_id!r}: {err}{close_env_ids(name)}") from err
    creator = entry
    if isinstance(entry, str):
        # Loaded by hand rather than with load_env_creator: a module that cannot be imported or
        # lacks the name is the user's mistake; any other error in the module is a real bug.
        entry_module, _, attr = entry.partition(":")
        try:
            loaded = importlib.import_module(entry_module)
        except ImportError as err:
            raise ConfigError(
                f"env id {env_id!r}: module {entry_module!r} of its entry point cannot be "
                f"imported ({err})"
            ) from err
        except Exception as err:  # noqa: BLE001  (whatever the user's module raises)
            raise ConfigError(
                f"env id {env_id!r}: module {entry_module!r} of its entry point raised an "
                f"error when imported: {describe(err)}"
            ) from err
        creator = getattr(loaded, attr, None)
        if creator is None:
            raise ConfigError(f"env id {env_id!r}: its entry point {entry!r} does not exist")
    try:
        return inspect.signature(creator).parameters
    except (TypeError, ValueError):
        return None


def close_env_ids(name: str) -> str:
    """A hint for an unknown env id: the registered ids closest to ``name``, or else epgkit's
    task families (gymnasium's own message only suggests names within the same namespace)."""
    close = difflib.get_close_matches(name, list(gym.registry), n=5, cutoff=0.6)
    if close:
        return f" Close registered ids: {', '.join(close)}."
    return f" epgkit's task families: {', '.join(registered())} (see `epgkit list envs`)."


def shipped_spec(env_id: str) -> EnvSpec | None:
    """The registration of ``env_id`` to send with an inner loop to another process, which has
    not run the config's imports (``import my_envs`` runs in the driver only): the spec of a
    ``Name-v0`` id registered here, None for a ``module:Name-v0`` id (the receiver imports the
    module) or a spec that cannot be pickled (an entry point made by a lambda)."""
    spec = None if ":" in env_id else gym.registry.get(env_id)
    try:
        pickle.dumps(spec)
    except Exception:  # noqa: BLE001  (whatever an entry point's pickling raises)
        return None
    return spec


def register_shipped(spec: EnvSpec | None) -> None:
    """Registers a spec sent by ``shipped_spec`` unless this process knows the id already."""
    if spec is not None:
        gym.registry.setdefault(spec.id, spec)
