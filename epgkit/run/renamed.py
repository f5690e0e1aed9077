"""Bindings renamed since a run was recorded, and the one function that translates them.

Runs recorded before where-to-run left ``Experiment`` (its ``config.gin``, its
``operative_config.gin``, the ``operative_config`` a loss file carries) bind
``Experiment.workers``, ``scheduler``, ``connect_timeout``, ``worker_timeout`` and ``run_dir``.
``upgrade`` rewrites those lines as the ``Launch`` and cluster bindings that mean the same, so
that such runs resume and such losses train; every other line is left as it is.
"""

from __future__ import annotations

import ast
import re

_OLD = re.compile(
    r"^(?P<indent>\s*)Experiment\.(?P<name>workers|scheduler|connect_timeout|worker_timeout|"
    r"run_dir)\s*=\s*(?P<value>.*?)\s*$"
)
_SIMPLE = {
    "connect_timeout": "Scheduler.connect_timeout",
    "worker_timeout": "Launch.worker_timeout",
    "run_dir": "Launch.run_dir",
}


def _literal(text: str) -> tuple[bool, object]:
    """(True, value) for a Python literal, with or without a trailing comment."""
    for candidate in (text, text.split("#", 1)[0]):
        try:
            return True, ast.literal_eval(candidate.strip())
        except (ValueError, SyntaxError):
            continue
    return False, None


def _new_lines(name: str, value: str, remote: bool) -> list[str]:
    """The new bindings for ``Experiment.<name> = <value>``."""
    if name in _SIMPLE:
        return [f"{_SIMPLE[name]} = {value}"]
    known, literal = _literal(value)
    if name == "scheduler":
        if known and literal is None:
            return []  # the default: no scheduler
        return ["Launch.cluster = @Scheduler()", f"Scheduler.address = {value}"]
    if known and literal == 0 and not remote:  # workers = 0 ran in the driver's process
        return ["Launch.cluster = @InProcess()"]
    return [f"LocalCluster.workers = {value}"]


def upgrade(text: str) -> str:
    """``text`` (gin) with the old where-to-run bindings of ``Experiment`` rewritten.

    ``Experiment.workers = 0`` becomes ``Launch.cluster = @InProcess()`` (unless a scheduler is
    set too, which took precedence); ``Experiment.scheduler = 'ADDR'`` becomes
    ``Launch.cluster = @Scheduler()`` and ``Scheduler.address = 'ADDR'``, and ``None`` nothing.
    """
    matches = [_OLD.match(line) for line in text.splitlines()]
    if not any(matches):
        return text
    remote = any(
        m and m["name"] == "scheduler" and _literal(m["value"]) != (True, None) for m in matches
    )
    out = []
    for line, match in zip(text.splitlines(), matches, strict=True):
        if match is None:
            out.append(line)
            continue
        new = _new_lines(match["name"], match["value"], remote)
        out.extend(f"{match['indent']}{binding}" for binding in new)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
