"""The user's own modules a run depends on: recorded with its losses, compared when reused.

A config names a user's loss, env, policy or strategy through ``import my_module`` (or an env
id ``my_module:Env-v0``). Gin records the import, not the code: the same loss file would train
with whatever ``my_module`` the current folder holds. So each loss file records the file and
SHA-256 of every such module, and ``train`` and ``--resume`` say when the code they import now
is another (a warning: a fixed bug is a reason to change it). A component defined in
``__main__`` (a script, a notebook) cannot be imported again at all: that is said when the run
starts.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from epgkit.method.user_code import is_users_file

_IMPORT = re.compile(r"^import\s+([\w.]+)\s*$", re.MULTILINE)


def imported(config_text: str, env_ids: Iterable[str] = ()) -> list[str]:
    """The modules a config imports: its ``import`` lines and its env ids' ``module:`` parts."""
    names = _IMPORT.findall(config_text)
    names += [env_id.rpartition(":")[0] for env_id in env_ids if ":" in env_id]
    return list(dict.fromkeys(names))


def fingerprint(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """File and SHA-256 of each module of ``names`` that is the user's own (imported already,
    outside Python, the installed libraries and epgkit)."""
    out = {}
    for name in names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path is None or not is_users_file(path):
            continue
        path = os.path.realpath(path)
        with open(path, "rb") as f:
            out[name] = {"file": path, "sha256": hashlib.sha256(f.read()).hexdigest()}
    return out


def changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the modules a loss recorded and those imported now, one phrase
    each (empty when the same files hold the same code, or nothing was recorded)."""
    said = []
    for name, then in recorded.items():
        current = now.get(name)
        if current is None:
            continue  # not imported now: gin fails on the missing name itself
        if current["sha256"] == then.get("sha256"):
            continue
        if current["file"] == then.get("file"):
            what = f"({current['file']}) has changed since the loss was evolved with it"
        else:
            what = f"is {current['file']}, not the loss's {then.get('file')}, and its code differs"
        said.append(f"module {name} {what}: results may differ")
    return said


def in_main(components: Mapping[str, Any]) -> list[str]:
    """A phrase for each component (role → object) whose class is defined in ``__main__``."""
    return [
        f"{role} {type(obj).__name__} is defined in __main__ (a script or a notebook), which "
        "`epgkit train` and `--resume` cannot import: define it in a module and import that"
        for role, obj in components.items()
        if obj is not None and type(obj).__module__ == "__main__"
    ]


def warnings(
    config_text: str, env_ids: Iterable[str], components: Mapping[str, Any],
    recorded: Mapping[str, Any] | None,
) -> tuple[dict[str, dict[str, str]], list[str]]:  # fmt: skip
    """The user's modules of a config (``fingerprint``) and what to warn of: components
    defined in ``__main__``, and code that changed since ``recorded`` (a loss file's
    ``user_modules``; None for a new run)."""
    now = fingerprint(imported(config_text, env_ids))
    return now, in_main(components) + changes(recorded or {}, now)
