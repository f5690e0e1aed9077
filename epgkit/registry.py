"""The component registry: gin, plus an index of what was registered under which kind.

Gin is the registry. ``register(kind)`` is a thin wrapper over ``gin.register`` that also
remembers the kind, so ``epgkit list`` and the registry-driven tests can enumerate every loss,
policy and ES strategy without a second registry of names. Environments use gymnasium's
registry instead (see ``epgkit.envs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import gin

KINDS = ("loss", "policy", "strategy", "inner_loop", "cluster", "past_init")

T = TypeVar("T")

# Filled at import time by the decorator below, like gin's own registry; never mutated later.
_INDEX: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}


def register(kind: str) -> Callable[[T], T]:
    """Registers a class with gin under its own name and indexes it under ``kind``.

    Example:
        >>> @register("loss")
        ... @dataclasses.dataclass(frozen=True)
        ... class MyLoss: ...

        makes ``InnerLoop.loss = @MyLoss()`` valid in any gin file.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")

    def decorate(obj: T) -> T:
        name = obj.__name__  # type: ignore[attr-defined]
        for other_kind, names in _INDEX.items():
            other = names.get(name)
            where = f"{getattr(other, '__module__', '?')}.{getattr(other, '__qualname__', name)}"
            # Another class of that name: gin's own message would only suggest its interactive
            # mode. The same class defined again (a notebook's cell run twice) is gin's to judge.
            if other is not None and where != f"{obj.__module__}.{obj.__qualname__}":
                raise ValueError(
                    f"a {other_kind} named {name!r} is registered already ({where}); a config "
                    f"names components by class name alone, so give this {kind} another name"
                )
        registered = gin.register(obj, module=f"epgkit.{kind}")
        _INDEX[kind][name] = registered
        return registered

    return decorate


def index(kind: str) -> dict[str, object]:
    """Name → registered object for one kind, of what has been imported so far
    (``epgkit.components.registered`` imports epgkit's own components first)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return dict(sorted(_INDEX[kind].items()))
