"""Gin plumbing for the driver: finding config files, parsing them, reporting mistakes."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util  # gin 0.5 uses importlib.util without importing it; so do we
import io
import logging
import re
import tokenize
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import gin

import epgkit.run.kube  # noqa: F401  (the clusters register themselves here, in the driver:
import epgkit.run.slurm  # noqa: F401  epgkit.components is what workers import too)
from epgkit.envs.ids import check_env_kwargs
from epgkit.errors import ConfigError
from epgkit.method.experiment import Experiment
from epgkit.method.inner_loop import InnerLoop
from epgkit.method.policies import default_policy
from epgkit.run.renamed import upgrade


def _gin_dir() -> Path:
    """The gin folder, found as the package ``epgkit.gin`` (t5x computes its search paths from
    the package too): ``gin/`` of a checkout (``epgkit/__init__.py`` maps the source root into
    the package, an editable install maps it by name) or ``epgkit/gin`` of an installed wheel."""
    spec = importlib.util.find_spec("epgkit.gin")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if Path(folder, "base.gin").is_file():
            return Path(folder).resolve()
    return Path(__file__).resolve().parents[2] / "gin"  # a checkout that is not importable


GIN_DIR = _gin_dir()


def available() -> list[str]:
    """The gin files shipped with epgkit, relative to the gin folder."""
    return sorted(str(p.relative_to(GIN_DIR)) for p in GIN_DIR.rglob("*.gin"))


def experiments() -> list[str]:
    """The shipped experiment files (top level of the gin folder; subfolders hold fragments
    such as ``baselines/*.gin`` that are included on top of an experiment; ``base.gin`` is
    what they include, and names no env)."""
    return [n for n in available() if "/" not in n and n not in ("base.gin", "debug.gin")]


def resolve(name: str) -> Path:
    """A config path as given, or a file of the gin folder by name (``quickstart``); a name
    under ``gin/`` (``gin/quickstart.gin``, as a checkout spells it) is the shipped file
    wherever the command runs."""
    shipped = name.removeprefix("gin/")
    for candidate in (Path(name), GIN_DIR / shipped, GIN_DIR / f"{shipped}.gin"):
        try:
            if candidate.is_file():
                return candidate
        except OSError as err:  # a name too long to look up
            raise ConfigError(f"config file {name!r}: {err.strerror}") from None
    if Path(name).is_dir():  # not a shipped name either (a run directory named quickstart)
        run = (Path(name) / "config.gin").is_file()
        held = " that holds a run: continue it with --resume" if run else ""
        raise ConfigError(f"config file {name!r} is a directory{held}; give gin files")
    close = difflib.get_close_matches(Path(name).name, available(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"config file {name!r} not found.{hint} Shipped configs: {', '.join(available())}"
    )


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


def _explain(err: Exception) -> str:
    """Gin's message plus close names for an unknown configurable or parameter; one line for
    a required parameter left unset, and no "In call to configurable" trail."""
    text = str(err).strip()
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


class _QuietIncludeMisses(logging.Filter):
    """Gin logs an ERROR for every search-path entry an include is not in; that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Path not found")


def parse(files: Sequence[str | Path], bindings: Sequence[str] = ()) -> list[Path]:
    """Clears gin and parses ``files`` then ``bindings`` (later ones win); returns the paths."""
    import epgkit.components  # noqa: F401  (registers every built-in configurable)

    paths = [resolve(str(f)) for f in files]
    for path in paths:
        try:
            path.read_text()
        except UnicodeDecodeError as err:  # gin's own message names no file
            raise ConfigError(
                f"config file {str(path)!r} is not a gin text file ({err.reason})"
            ) from None
    bindings = [upgrade(b) for b in bindings]  # old names of a recorded config, or of habit
    root = logging.getLogger()
    if not any(isinstance(f, _QuietIncludeMisses) for f in root.filters):
        root.addFilter(_QuietIncludeMisses())
    gin.clear_config()
    for folder in (GIN_DIR, GIN_DIR.parent):  # `include 'gin/x.gin'` too, from any folder
        gin.add_config_file_search_path(str(folder))
    try:
        gin.parse_config_files_and_bindings([str(p) for p in paths], list(bindings))
    except tokenize.TokenError as err:
        where = _unbalanced(paths, bindings)
        raise ConfigError(f"unbalanced brackets in {where}: {err.args[0]}") from None
    except RecursionError as err:
        raise ConfigError(_include_cycle(err, paths)) from None
    except Exception as err:
        if _raised_by_a_module(err):  # `import my_module` ran the module, and it raised
            from epgkit.method.user_code import describe

            where = " ".join(x.strip() for x in str(err).splitlines()[1:])  # gin's file, line
            raise ConfigError(
                f"a module the config imports raised an error when imported: {describe(err)}"
                + (f" ({where})" if where else "")
            ) from None
        # Gin parses the bindings as one text, a line each, and names no binding; one that
        # leaves a bracket open makes gin read on into the next.
        given = "\n".join(bindings).splitlines()[: getattr(err, "lineno", None) or 0]
        if isinstance(err, SyntaxError) and not err.filename and given and "\n" not in err.msg:
            open_ = [b for b in given if not _balanced(b)]
            raise ConfigError(f"{err.msg} (the binding {(open_ or given)[-1]!r})") from None
        if isinstance(err, ValueError | SyntaxError | ImportError | TypeError | OSError):
            raise ConfigError(_explain(err)) from None
        raise
    return paths


def _raised_by_a_module(err: BaseException) -> bool:
    """Whether ``err`` was raised while a module's top-level code ran (an import)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name != "<module>":
        tb = tb.tb_next
    return tb is not None


def _balanced(text: str) -> bool:
    try:
        list(tokenize.generate_tokens(io.StringIO(text).readline))
    except tokenize.TokenError:
        return False
    return True


def _unbalanced(paths: Sequence[Path], bindings: Sequence[str]) -> str:
    """Which of the files or bindings has brackets that do not close (all of them, when none
    alone does: an included file)."""
    texts = [(str(p), p.read_text()) for p in paths] + [(f"the binding {b!r}", b) for b in bindings]
    open_ = [name for name, text in texts if not _balanced(text)]
    return open_[0] if open_ else f"{', '.join(map(str, paths))} or the bindings"


def _include_cycle(err: RecursionError, paths: Sequence[Path]) -> str:
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


def build(factory):
    """Calls a gin-configured factory, turning bad values into a ``ConfigError``."""
    try:
        return factory()
    except (ValueError, TypeError) as err:
        raise ConfigError(_explain(err)) from None


def experiment() -> Experiment:
    """The parsed config's experiment as evolve, sweep and train run it: the ``env_kwargs``
    checked before an env is built with them, then the default policies filled in."""
    exp = build(Experiment)
    for loop in [exp.inner, *exp.baselines.values()]:
        check_env_kwargs(loop.env_id, [k for k, _ in loop.env_kwargs])
    return with_policies(exp)


def with_policies(exp: Experiment) -> Experiment:
    """``exp`` with a policy in every inner loop whose config names none.

    ``InnerLoop.policy = None`` (base.gin) means the default of the env's action space:
    ``GaussianMLP`` for Box actions, ``CategoricalMLP`` for Discrete ones. It is built here,
    in the driver, through gin, so that its bindings (``GaussianMLP.hidden``,
    ``CategoricalMLP.hidden``) apply and the operative config records them. Baselines
    without a policy of their own get the same one, so comparisons stay like for like."""
    loops = [exp.inner, *exp.baselines.values()]
    if all(loop.policy is not None for loop in loops):
        return exp
    policy = exp.inner.policy
    if policy is None:
        # A bad binding (GaussianMLP.activation = 'swish') is a ConfigError, as elsewhere.
        policy = build(lambda: gin.get_configurable(default_policy(exp.inner.dims()))())

    def fill(loop: InnerLoop) -> InnerLoop:
        return loop if loop.policy is not None else replace(loop, policy=policy)

    baselines = {name: fill(loop) for name, loop in exp.baselines.items()}
    return replace(exp, inner=fill(exp.inner), baselines=baselines)
