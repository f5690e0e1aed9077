"""The paths a command writes: refused up front when unusable, and OS errors in one line.

A path the user gives for output (``--run-dir``, ``--out``) is checked before anything is
written or any cluster is started: an existing file where a directory goes (or the reverse), a
file among its parents, a name longer than the file system allows, a folder this process cannot
write in (a read-only file system, no permission). What can only fail while writing (a full
disk, a file system remounted read-only mid-run) is an ``OSError``; ``naming`` makes sure it
names its file and ``describe`` says it in one line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn


class PathError(ValueError):
    """A path given by the user that cannot be written as asked."""


def describe(err: OSError) -> str:
    """``PATH: reason`` (the OS's words, e.g. "No space left on device"), in one line."""
    reason = err.strerror or (str(err).splitlines()[0] if str(err) else type(err).__name__)
    where = [str(f) for f in (err.filename, err.filename2) if f is not None]
    return f"{' → '.join(where)}: {reason}" if where else reason


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Gives an ``OSError`` raised inside the block the path it concerns, if it names none
    (a write through an open file object fails with no file name, e.g. when the disk is full)."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def check_dir(path: str | Path, what: str) -> None:
    """Refuses a directory that cannot be created or written in; writes nothing.

    Args:
        path: The directory, new or existing.
        what: How the user gave it, for the message (``--run-dir``, ``--out``).

    Raises:
        PathError: One sentence naming the path and what is wrong with it.
    """
    path = Path(path)
    if exists(path, what) and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a directory; give a directory")
    _check_writable(path, what)


def check_file(path: str | Path, what: str, suffixes: Sequence[str] = ()) -> None:
    """Refuses a file that cannot be created or replaced, or (``suffixes``, e.g. ``(".gif",)``)
    whose name does not say a format the writer knows; writes nothing.

    Raises:
        PathError: One sentence naming the path and what is wrong with it.
    """
    path = Path(path)
    if exists(path, what) and path.is_dir():
        raise PathError(f"{what} {path} is a directory; give the name of the file to write")
    if suffixes and path.suffix.lower() not in suffixes:
        raise PathError(
            f"{what} {path}: the file's suffix says its format; give one of {', '.join(suffixes)}"
        )
    _check_writable(path, what)


def figure_suffixes() -> tuple[str, ...]:
    """The file suffixes matplotlib can save a figure as (``.png``, ``.pdf``, ``.svg``, …)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(f".{kind}" for kind in sorted(FigureCanvasBase.get_supported_filetypes()))


def exists(path: str | Path, what: str) -> bool:
    """Whether ``path`` exists; a path that cannot even be looked up (a name too long, a file
    among its parents) is refused with a ``PathError`` instead of an ``OSError``."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as err:  # a name too long, a file among the parents, a loop of links
        _refuse(path, what, err)
    return True


def _check_writable(path: Path, what: str) -> None:
    """The path, or else the nearest folder above it that exists, can be written, and the
    names below that folder which would be created fit the file system."""
    absolute = Path(os.path.abspath(path))
    existing, missing = absolute, []
    while True:
        try:
            os.stat(existing)
            break
        except FileNotFoundError:
            missing.append(existing.name)
            existing = existing.parent
        except OSError as err:  # a name too long, a file among the parents
            _refuse(path, what, err)
    name_max = _pathconf(existing, "PC_NAME_MAX", 255)
    for name in missing:
        if len(os.fsencode(name)) > name_max:
            raise PathError(
                f"{what} {path}: the name {name[:24]}… is longer than the {name_max} bytes "
                "this file system allows"
            )
    if len(os.fsencode(str(absolute))) >= _pathconf(existing, "PC_PATH_MAX", 4096):
        _refuse(path, what, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)))
    if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        reason = "read-only file system" if read_only else "permission denied"
        where = f"in {existing}" if existing.is_dir() else str(existing)
        raise PathError(f"{what} {path}: cannot write {where} ({reason})")


def _refuse(path: Path, what: str, err: OSError) -> NoReturn:
    if isinstance(err, NotADirectoryError):
        for parent in Path(os.path.abspath(path)).parents:
            if parent.is_file():
                raise PathError(f"{what} {path}: {parent} is a file, not a directory")
    raise PathError(f"{what} {path}: {err.strerror or err}")


def _pathconf(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default
