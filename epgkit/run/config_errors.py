"""How a mistake in a gin config is told: one line, where it is, and the names it may have meant.

Gin's own messages name no binding, add a trail of "In call to configurable" lines and list no
alternatives; ``epgkit.run.config.parse`` hands its errors here to be worded for a user.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import re
import tokenize
from collections.abc import Sequence
from pathlib import Path

import gin

_PLURALS = {"loss": "losses", "policy": "policies", "strategy": "strategies",
           "inner_loop": "inner loops", "cluster": "clusters",
           "past_init": "past-policy initializations"}  # fmt: skip
#: The configurables that are no component: the roots a config binds.
ROOTS = ("Experiment", "Launch", "TestTime")


def _known_by_kind() -> dict[str, list[str]]:
    from epgkit.components import KINDS, registered

    return {kind: list(registered(kind)) for kind in KINDS}


#: What a config must set, and how (t5x's ``%gin.REQUIRED``: base.gin marks them).
_MUST_SET = {
    "InnerLoop.env_id": "e.g. InnerLoop.env_id = 'epgkit/PointGoal-v0' (`epgkit list envs`), "
    "or start from an experiment file such as gin/quickstart.gin (`epgkit list configs`)",
    "Scheduler.address": "the scheduler to run on, e.g. --scheduler tcp://HOST:8786",
}


def _unset(names: Sequence[str]) -> str:
    """One line for parameters that a config must set and did not."""
    hints = "; ".join(_MUST_SET[n] for n in names if n in _MUST_SET)
    why = ("which every experiment must set" if "InnerLoop.env_id" in names
           else "which it must set" if hints else "which has no default")  # fmt: skip
    return f"the config does not set {', '.join(names)}, {why}" + (f": {hints}" if hints else "")


def explain(err: Exception) -> str:
    """Gin's message plus close names for an unknown configurable or parameter; one line for
    a required parameter left unset, and no "In call to configurable" trail."""
    text = str(err).strip()
    match = re.search(r"No bindings specified for '([\w.]+)/gin.macro'", text)
    if match:  # gin goes on to print the whole config
        return (
            f"the macro %{match[1]} is used but never defined: define it (-b "
            f"'{match[1]} = 0.001' or a line in a config) or write the value itself"
        )
    match = re.search(r"(\S+) set to `%gin.REQUIRED` but not subsequently overridden", text)
    if match:  # a parameter base.gin marks %gin.REQUIRED
        return _unset([match.group(1)])
    # A parameter without a default (a config that names no env), as gin or Python says it.
    match = re.search(r"No values supplied by Gin or caller for arguments: \[([^\]]*)\]", text)
    owner = re.search(r"In call to configurable '([\w./]+)'", text)
    if not (match and owner):
        match = re.search(r"missing \d+ required positional arguments?: (.*)", text)
        owner = re.search(r"(\w+)\.__init__\(\) missing", text)
    if match and owner:
        names = re.findall(r"'(\w+)'", match.group(1))
        return _unset([f"{owner.group(1)}.{n}" for n in names])
    text = "\n".join(x for x in text.splitlines()
                     if not x.strip().startswith("In call to configurable"))  # fmt: skip
    match = re.search(r"Failed to parse token '(nan|inf)' \(([^)]*)\)", text)
    if match:
        where = match.group(2) if "," in match.group(2) else f"the bindings, {match.group(2)}"
        return (f"{match.group(1)!r} ({where}) is not a value: every number of an experiment "
                "is finite, written as a Python literal such as 0.001")  # fmt: skip
    match = re.search(r"Failed to parse token '([^']*)' \(([^)]*)\)", text)
    if match and text.startswith("malformed node"):  # gin's words for "not a literal"
        where = match.group(2) if "," in match.group(2) else f"the bindings, {match.group(2)}"
        return (f"{match.group(1)!r} ({where}) is not a value gin can read: a value is a Python "
                "literal (0.001, 'text', (64, 64)) or a reference (@PPOLoss())")  # fmt: skip
    # Gin says "matching 'OpenEs'" for a binding's target and "matching reference
    # '@ppo/EPGLos()'" for a value; the scope and the call are not part of the name.
    match = re.search(r"No configurable matching (?:reference )?'@?([\w./]+)", text)
    if match:
        name = re.split(r"[./]", match.group(1))[-1]
        known = _known_by_kind()
        every = [*ROOTS, *(n for names in known.values() for n in names)]
        close = difflib.get_close_matches(name, every)
        kind = next((k for k, names in known.items() if close and close[0] in names), None)
        if close:
            text += f"\nDid you mean {', '.join(close)}?"
        if kind in _PLURALS:
            text += f"\nKnown {_PLURALS[kind]}: {', '.join(known[kind])}"
        elif not close:
            text += f"\nKnown configurables: {', '.join(ROOTS)}; " + "; ".join(
                f"{_PLURALS[kind]}: {', '.join(names)}" for kind, names in known.items() if names
            )
        text += "\nA component of your own is known once its module is imported: `import MODULE`"
        text += " in the config, or -b 'import MODULE'"
    match = re.search(r"Configurable '(\w+)' doesn't have a parameter named '(\w+)'", text)
    if match:
        params = _parameters(match.group(1))
        close = difflib.get_close_matches(match.group(2), params)
        text += f"\nDid you mean {', '.join(close)}?" if close else ""
        text += f"\nIts parameters: {', '.join(params)}" if params else ""
    return _one_line(text)


def _one_line(text: str) -> str:
    """Gin's message, where it is (a file's line or a binding, from the lines gin adds) and the
    hints above, on one line."""
    head, *rest = [x.strip() for x in text.splitlines() if x.strip()]
    where, hints = "", []
    for i, line in enumerate(rest):
        place = re.match(r'In file "([^"]+)", line (\d+)', line)
        given = re.match(r"In bindings string line \d+", line)
        source = rest[i + 1] if i + 1 < len(rest) else ""
        if place:
            where = f" ({place[1]}, line {place[2]}: {source})"
        elif given:
            where = f" (the binding {source})"
        elif line.startswith(("Did you mean", "Known ", "Its parameters", "A component of")):
            hints.append(line.rstrip("?.") + ("?" if line.endswith("?") else ""))
    if not (where or hints):
        return " ".join([head, *rest])
    return f"{head.rstrip('.')}{where}." + "".join(f" {h}" + ("" if h.endswith("?") else ".")
                                                  for h in hints)  # fmt: skip


def _parameters(configurable: str) -> list[str]:
    from epgkit.components import KINDS, registered

    known = {name: gin.get_configurable(name) for name in ROOTS if _is_configurable(name)}
    for kind in KINDS:
        known.update(registered(kind))
    obj = known.get(configurable)
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def _is_configurable(name: str) -> bool:
    try:
        gin.get_configurable(name)
    except ValueError:
        return False
    return True


def raised_by_a_module(err: BaseException) -> bool:
    """Whether ``err`` was raised while a module's top-level code ran (an import)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name != "<module>":
        tb = tb.tb_next
    return tb is not None


def failed_binding(bindings: Sequence[str], lineno: int) -> str | None:
    """The binding gin failed on at line ``lineno`` of the bindings, which it parses as one
    text and names none of: the first before that line to leave a bracket open (gin read on
    from it), else the one that holds the line. A binding may span lines (a recorded config)."""
    first = 1
    for binding in bindings:
        last = first + binding.count("\n")
        if not _balanced(binding) or first <= lineno <= last:
            if lineno < first:
                return None
            return binding.split("\n")[min(lineno, last) - first]  # of a recorded config, a line
        first = last + 1
    return None


def _balanced(text: str) -> bool:
    try:
        list(tokenize.generate_tokens(io.StringIO(text).readline))
    except tokenize.TokenError:
        return False
    return True


def unbalanced(paths: Sequence[Path], bindings: Sequence[str]) -> str:
    """Which of the files or bindings has brackets that do not close (all of them, when none
    alone does: an included file)."""
    texts = [(str(p), p.read_text()) for p in paths] + [(f"the binding {b!r}", b) for b in bindings]
    open_ = [name for name, text in texts if not _balanced(text)]
    return open_[0] if open_ else f"{', '.join(map(str, paths))} or the bindings"


def include_cycle(err: RecursionError, paths: Sequence[Path]) -> str:
    """Names the files of an include cycle, read off the include chain gin adds to the error
    (innermost first), which repeats once the chain has come round."""
    chain = re.findall(r'In file "([^"]+)", line \d+', str(err))[::-1]
    for end, name in enumerate(chain):
        if name in chain[:end]:
            cycle = chain[chain.index(name) : end + 1]
            return (
                f"gin include cycle: {' includes '.join(cycle)}; a config file cannot include "
                "itself, directly or through others"
            )
    return f"gin includes nest too deeply under {', '.join(map(str, paths))} (an include cycle?)"


def unused_scopes(bindings: Sequence[str]) -> str | None:
    """One line for a binding of the user's whose scope nothing in the parsed config calls
    (``ppoo/`` for ``ppo/``), or None. Gin takes any scope silently: its values would reach
    nothing."""
    used: set[str] = set()
    todo = [v for params in gin.config._CONFIG.values() for v in params.values()]
    while todo:
        value = todo.pop()
        if isinstance(value, gin.config.ConfigurableReference):
            used.update(value.scopes)
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list | tuple):
            todo.extend(value)
    for binding in bindings:
        if "\n" in binding.strip():  # a recorded config: all its baselines', used or not
            continue
        for line in binding.splitlines():
            found = re.match(r"\s*([\w./]+)/[\w.]+\s*=", line)
            scopes = found[1].split("/") if found else []
            if unknown := [s for s in scopes if s not in used]:
                known = ", ".join(sorted(used - {""})) or "none"
                close = difflib.get_close_matches(unknown[0], used)
                return (
                    f"the binding {line.strip()!r}: nothing in this config is called in scope "
                    f"{unknown[0]!r}, so the value would reach nothing"
                    + (f"; did you mean {close[0]!r}?" if close else ".")
                    + f" Scopes in use: {known}"
                )
    return None
