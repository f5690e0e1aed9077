"""The ``epgkit`` command line (typer), a thin layer over ``epgkit.api``.

``app`` holds what every command shares (``epgkit.cli.app``); the commands register themselves
on it when their modules are imported here: ``runs`` (evolve, train, sweep, plot) and ``views``
(render, envs show, list, analyze).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import typer

from epgkit.cli import runs, views  # noqa: F401  (their commands register on `app`, in order)
from epgkit.cli.app import USAGE_ERROR, app

__all__ = ["app", "main"]


def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception ``name``, from the click typer runs on: recent typers vendor their
    own copy (``typer._click``), older ones use ``click``."""
    kinds = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _given_twice(argv: list[str]) -> str | None:
    """The first single-valued option ``argv`` gives twice (click would keep the last in
    silence, so `--resume a --resume b` would resume b without a word)."""
    import typer.main

    command, args = typer.main.get_command(app), list(argv)
    while args and args[0] in getattr(command, "commands", {}):
        command = command.commands[args.pop(0)]
    args = args[: args.index("--")] if "--" in args else args
    for param in command.params:
        if param.param_type_name != "option" or param.multiple or param.is_flag:
            continue
        given = [a for a in args if a in param.opts or a.split("=")[0] in param.opts]
        if len(given) > 1:
            return param.opts[0]
    return None


def _ignore_more_interrupts() -> None:
    """Stopping already: a second Ctrl-C would only interrupt the exit's own clean-up (Dask
    closes its clusters at exit) with a traceback of its own."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> None:
    """Console entry point.

    Click's own usage errors (an unknown option, a missing argument, a value outside an
    option's range) are shown as epgkit's are, in one line with exit code 2, instead of click's
    usage block; the bare command and command groups still show their help.
    """
    usage, no_args, abort = (_click_errors(n) for n in ("UsageError", "NoArgsIsHelpError", "Abort"))
    # As under `python -m epgkit`: the user's modules in the working directory (`-b 'import
    # my_losses'`, `my_envs:Drift-v0`) import without PYTHONPATH, here and in the Dask workers
    # this process spawns (they inherit its sys.path). Appended, so that a file there cannot
    # shadow an installed package.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    if twice := _given_twice(sys.argv[1:] if argv is None else argv):
        typer.echo(f"epgkit: error: {twice} is given twice; give it once", err=True)
        sys.exit(USAGE_ERROR)
    try:
        code = app(argv, standalone_mode=False, prog_name="epgkit")
    except no_args:  # typer has printed the help already
        sys.exit(USAGE_ERROR)
    except usage as err:
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"epgkit: error: {err.format_message()}{hint}", err=True)
        sys.exit(USAGE_ERROR)
    except abort:  # Ctrl-C, which click turns into Abort: as click shows it
        _ignore_more_interrupts()
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except BaseException as err:
        # Ctrl-C while a C extension initializes surfaces as its ImportError: no traceback.
        if not any(isinstance(e, KeyboardInterrupt) for e in _chain(err)):
            raise
        _ignore_more_interrupts()
        typer.echo("epgkit: interrupted", err=True)
        sys.exit(130)
    if code == 130:  # typer's code for a Ctrl-C the command let through
        _ignore_more_interrupts()
    sys.exit(code if isinstance(code, int) else 0)
