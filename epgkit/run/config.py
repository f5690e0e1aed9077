"""Gin plumbing for the driver: finding config files and parsing them (``config_errors`` words
the mistakes)."""

from __future__ import annotations

import difflib
import importlib.util  # gin 0.5 uses importlib.util without importing it; so do we
import logging
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
from epgkit.run.config_errors import (
    explain,
    failed_binding,
    include_cycle,
    raised_by_a_module,
    unbalanced,
    unused_scopes,
)
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


class _QuietIncludeMisses(logging.Filter):
    """Gin logs an ERROR for every search-path entry an include is not in; that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Path not found")


def parse(
    files: Sequence[str | Path], bindings: Sequence[str] = (), *, scopes: bool = True
) -> list[Path]:
    """Clears gin and parses ``files`` then ``bindings`` (later ones win); returns the paths.
    ``scopes``: refuse a binding in a scope nothing calls (off for bindings parsed alone)."""
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
        where = unbalanced(paths, bindings)
        raise ConfigError(f"unbalanced brackets in {where}: {err.args[0]}") from None
    except RecursionError as err:
        raise ConfigError(include_cycle(err, paths)) from None
    except Exception as err:
        if raised_by_a_module(err):  # `import my_module` ran the module, and it raised
            from epgkit.method.user_code import describe

            where = " ".join(x.strip() for x in str(err).splitlines()[1:])  # gin's file, line
            raise ConfigError(
                f"a module the config imports raised an error when imported: {describe(err)}"
                + (f" ({where})" if where else "")
            ) from None
        syntax = isinstance(err, SyntaxError) and not err.filename and "\n" not in err.msg
        if syntax and (binding := failed_binding(bindings, err.lineno or 0)) is not None:
            raise ConfigError(f"{err.msg} (the binding {binding!r})") from None
        if isinstance(err, ValueError | SyntaxError | ImportError | TypeError | OSError):
            raise ConfigError(explain(err)) from None
        raise
    if scopes and (unused := unused_scopes(bindings)) is not None:
        raise ConfigError(unused)
    return paths


def build(factory):
    """Calls a gin-configured factory, turning bad values into a ``ConfigError``."""
    try:
        return factory()
    except (ValueError, TypeError) as err:
        raise ConfigError(explain(err)) from None


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
