"""When the user's own code fails: an env, a loss or a module of theirs raising.

An inner loop calls code epgkit does not own: the env's ``reset`` and ``step``, the loss and
the guidance loss. When one of them raises, the error is reported in one line naming that env
or loss, the first line of its error and where it was raised, instead of a traceback through
epgkit. ``UserCodeError`` is a plain exception, cheap to pickle from a Dask worker; it lives
here, apart from the driver's gin plumbing, so that worker code can raise it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sysconfig
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

_LIBRARIES = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)
# epgkit's own files: the package, and its task families (envs/ beside it in a checkout).
_ENVS = importlib.util.find_spec("epgkit.envs")
_EPGKIT = tuple(
    os.path.realpath(p) + os.sep
    for p in [
        os.path.dirname(os.path.dirname(__file__)),
        *((_ENVS and _ENVS.submodule_search_locations) or []),
    ]
)


class UserCodeError(RuntimeError):
    """The user's env, loss or module failed; the message names it and the first line of its
    error. A right command whose code fails: the CLI exits with code 1, without a traceback."""


def is_users_file(path: str) -> bool:
    """Whether ``path`` is the user's code: outside Python's and the installed libraries and
    outside epgkit's own modules."""
    if path.startswith("<"):  # <frozen ...>, <string>: not a file of theirs
        return False
    return not os.path.realpath(path).startswith((*_LIBRARIES, *_EPGKIT))


def _user_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    """(path, line) of the innermost frame in the user's code (so the user's line when the
    error went through theirs)."""
    found = None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if is_users_file(path):
            found = (os.path.realpath(path), tb.tb_lineno)
        tb = tb.tb_next
    return found


def _origin(tb: TracebackType | None) -> str:
    """``file:line`` of the user's innermost frame (``_user_frame``), or ""."""
    frame = _user_frame(tb)
    return "" if frame is None else f"{os.path.basename(frame[0])}:{frame[1]}"


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


def where_defined(function: object) -> str:
    """`` (file:line)`` of a function or method of the user's, to point at it; "" for epgkit's
    own or one without a source file (a notebook's, a built-in)."""
    function = inspect.unwrap(getattr(function, "__func__", function))
    try:
        path, line = inspect.getsourcefile(function), inspect.getsourcelines(function)[1]
    except (TypeError, OSError):
        return ""
    if path is None or not is_users_file(path):
        return ""
    return f" ({os.path.basename(path)}:{line})"


def _defined_in(obj: object) -> str | None:
    try:
        return os.path.realpath(inspect.getfile(type(obj)))
    except (TypeError, OSError):  # a class of __main__ in a notebook, or a built-in
        return None


def theirs(err: Exception, parts: Mapping[str, object]) -> UserCodeError | None:
    """``err`` as the one-line error of whichever of ``parts`` (e.g. ``{"policy": ...}``) it
    was raised in, when it was raised in the user's code; None when it was not (an error of
    epgkit's own keeps its traceback). A frame in a file that defines none of ``parts`` is
    still the user's: the error then names the file alone."""
    if isinstance(err, UserCodeError):
        return err
    frame = _user_frame(err.__traceback__)
    if frame is None:
        return None
    for role, part in parts.items():
        if part is not None and _defined_in(part) == frame[0]:
            return UserCodeError(f"{role} {type(part).__name__} failed: {describe(err)}")
    return UserCodeError(f"your code failed: {describe(err)}")


@contextmanager
def reported(parts: Mapping[str, object]) -> Iterator[None]:
    """Raises what the user's code raises inside as ``theirs`` names it; epgkit's own errors
    pass unchanged."""
    try:
        yield
    except Exception as err:  # noqa: BLE001  (epgkit's own errors are raised again)
        if (mine := theirs(err, parts)) is None:
            raise
        raise mine from err


def inner_loop_parts(loop: Any) -> dict[str, Any]:
    """The parts of an inner loop a user may replace, by role, for ``theirs`` to name."""
    return {"policy": loop.policy, "loss": loop.loss, "guidance loss": loop.guide}
