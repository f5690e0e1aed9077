"""When the user's own code fails: an env, a loss or a module of theirs raising.

An inner loop calls code epgkit does not own: the env's ``reset`` and ``step``, the loss and
the guidance loss. When one of them raises, the error is reported in one line naming that env
or loss, the first line of its error and where it was raised, instead of a traceback through
epgkit. ``UserCodeError`` is a plain exception, cheap to pickle from a Dask worker; it lives
here, apart from the driver's gin plumbing, so that worker code can raise it.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

_LIBRARIES = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)
_EPGKIT = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep


class UserCodeError(RuntimeError):
    """The user's env, loss or module failed; the message names it and the first line of its
    error. A right command whose code fails: the CLI exits with code 1, without a traceback."""


def _origin(tb: TracebackType | None) -> str:
    """``file:line`` of the innermost frame outside Python's and the installed libraries and
    outside epgkit's own modules (so the user's line when the error went through theirs)."""
    where = ""
    while tb is not None:
        path = os.path.realpath(tb.tb_frame.f_code.co_filename)
        if not path.startswith((*_LIBRARIES, _EPGKIT)) and not path.startswith("<"):
            where = f"{os.path.basename(path)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def describe(err: BaseException) -> str:
    """``Type: first line of the message (file:line)`` of an exception."""
    lines = str(err).strip().splitlines()
    text = type(err).__name__ + (f": {lines[0].strip()}" if lines else "")
    where = _origin(err.__traceback__)
    return f"{text} ({where})" if where else text


def blamed(who: str, doing: str, err: BaseException) -> UserCodeError:
    """The one-line error for ``err`` raised by ``who`` (e.g. "env 'my:Env-v0'") in ``doing``."""
    if isinstance(err, UserCodeError):
        return err
    return UserCodeError(f"{who} failed in {doing}: {describe(err)}")


@contextmanager
def blame(who: str, doing: str) -> Iterator[None]:
    """Turns any exception raised inside into a ``UserCodeError`` naming ``who``."""
    try:
        yield
    except Exception as err:  # noqa: BLE001  (whatever the user's code raises)
        raise blamed(who, doing, err) from err
