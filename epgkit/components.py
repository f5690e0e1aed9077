"""Every built-in component, imported so that its registration with gin has happened.

Gin configs name this module (``import epgkit.components``, recorded in every operative config)
to find epgkit's configurables; ``registered`` and ``lookup`` read the registry after it.
"""

from __future__ import annotations

import difflib

import epgkit.method.experiment  # noqa: F401
import epgkit.method.inner_loop  # noqa: F401
import epgkit.method.losses  # noqa: F401
import epgkit.method.policies  # noqa: F401
import epgkit.method.strategies  # noqa: F401
from epgkit.registry import KINDS, index

__all__ = ["KINDS", "lookup", "registered"]


def registered(kind: str) -> dict[str, object]:
    """Name → registered object for one kind: epgkit's own and whatever the user imported."""
    return index(kind)


def lookup(kind: str, name: str) -> object:
    """The component ``name`` of ``kind``; an unknown name lists the known ones."""
    known = registered(kind)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known)}")
    return known[name]
