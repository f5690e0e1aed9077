"""One writer per directory: the lock that ``evolve``, ``evolve --resume``, ``sweep`` and
``train`` hold.

The lock is a file ``lock`` in the directory, saying who holds it (host, PID, since when,
command line), and a POSIX record lock (``fcntl.lockf``) on that file. The kernel drops a
record lock when its process dies, however it dies, so a lock file whose record lock is free
was left by a killed process: it is stale, and the next writer takes it over. Record locks,
unlike ``flock``, belong to a process and are not inherited by the children it forks, so a
Dask worker (whatever its start method) never holds the lock of the run it works for, and a
worker outliving a killed driver does not keep the run locked.

Within one process the lock is re-entrant (record locks belong to the process, and closing
any descriptor of the file would drop them): the last release removes the file, and the
directories the lock itself created if they are still empty, so a refused start leaves no
trace. Where the file system has no record locks, a lock file is stale when its process is
not alive on this host.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import platform
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from epgkit.run.rundir import CHECKPOINT, METRICS, SUMMARY, SWEEP_JSON, RunDir, RunDirError

try:
    import fcntl
except ImportError:  # not POSIX: only the PID in the lock file says who holds it
    fcntl = None  # type: ignore[assignment]

LOCK = "lock"


class Busy(RunDirError):
    """Another process writes the directory."""


class _Held:
    """This process's hold on one lock file: its descriptor and how many handles share it."""

    def __init__(self, fd: int, created: list[Path]) -> None:
        self.fd, self.created, self.count, self.pid = fd, created, 0, os.getpid()


_HELD: dict[str, _Held] = {}
_GUARD = threading.RLock()  # re-entrant: a collected handle's finalizer may run while it is held


class DirLock:
    """Exclusive use of a directory by this process, until ``release`` (or garbage collection).

    Use as ``with DirLock(path):`` or ``lock = DirLock(path).acquire(); ...; lock.release()``.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.file = self.directory / LOCK
        self._release: weakref.finalize | None = None

    def acquire(self) -> DirLock:
        """Takes the lock, creating the directory if needed.

        Raises:
            Busy: A live process holds it (named by host, PID and start time).
            RunDirError: The directory cannot be created or the lock file written.
        """
        if self._release is not None and self._release.alive:
            return self
        with _GUARD:
            created = _create(self.directory)
            key = os.path.realpath(self.file)
            held = _HELD.get(key)
            if held is None:
                try:
                    held = _HELD[key] = _Held(_take(self.file), created)
                except BaseException:
                    _remove_empty(created)
                    raise
            held.count += 1
        self._release = weakref.finalize(self, _drop, key)
        return self

    def release(self) -> None:
        """Gives the lock back; the last release in this process removes the lock file."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(parent: Path, name: str) -> tuple[Path, DirLock]:
    """A new directory ``parent/name`` (else ``name-2``, ``name-3``, …), created and locked by
    this process: commands started in the same second, each naming its output by the time,
    get a directory each instead of refusing one another. Release the lock to give it back
    (an empty directory it created is then removed).

    Raises:
        RunDirError: ``parent`` cannot be created or written in.
    """
    for n in itertools.count(1):
        path = parent / (name if n == 1 else f"{name}-{n}")
        if os.path.lexists(path):  # another run's, finished or not
            continue
        lock = DirLock(path)
        try:
            lock.acquire()
        except Busy:  # another process claimed it first
            continue
        if any(entry.name != LOCK for entry in path.iterdir()):  # and had finished already
            lock.release()
            continue
        return path, lock
    raise AssertionError("unreachable")


def check_outside_runs(folder: str | Path, what: str) -> None:
    """Refuses an output written straight into an evolution's run directory (or its
    ``plots/``), a training's output, or any directory a command holds (or held) the lock of:
    their files have one writer, the command that made them. Their subfolders
    (``RUN_DIR/train/…``, ``RUN_DIR/analyze/…``) are free.

    Args:
        folder: The folder the output's files go into (a file's parent).
        what: How the user gave it, for the message (``--out``).

    Raises:
        RunDirError: One sentence naming that directory.
    """
    folder, marks = Path(folder).resolve(), (LOCK, SUMMARY, SWEEP_JSON, CHECKPOINT, METRICS)
    for owner in (folder, folder.parent) if folder.name == "plots" else (folder,):
        if RunDir(owner).is_run() or any((owner / name).exists() for name in marks):
            raise RunDirError(
                f"{what} would write into {owner}, which holds a run, a sweep or a training whose "
                "files only the command that made it writes: choose a place outside it (a "
                "new subfolder of it is fine)"
            )


def holder(path: Path) -> dict[str, Any] | None:
    """Who a lock file says holds it (None if it says nothing readable)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def describe(info: dict[str, Any] | None) -> str:
    if info is None:
        return "another process"
    return f"PID {info['pid']} on host {info.get('host', '?')} (since {info.get('since', '?')})"


def _me() -> dict[str, Any]:
    return {"host": platform.node(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}  # fmt: skip


def _create(directory: Path) -> list[Path]:
    """Makes ``directory`` and its missing parents; returns those it made, deepest first."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot use {directory} as a directory ({err.strerror})") from None
    return missing


def _remove_empty(created: list[Path]) -> None:
    for path in created:  # deepest first; a directory that holds anything stays
        try:
            path.rmdir()
        except OSError:
            return


def _take(file: Path) -> int:
    """Opens and locks ``file``, writes who holds it; returns the open descriptor."""
    for _ in range(100):  # another process may remove the file between our open and lock
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot write the lock file {file} ({err.strerror})") from None
        try:
            stale = _lock(fd, file)
            if os.path.exists(file) and os.path.samestat(os.fstat(fd), os.stat(file)):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    else:
        raise RunDirError(f"cannot lock {file}: it keeps being replaced")
    if stale is not None:
        print(f"epgkit: note: took over the lock of {file.parent}, left by {describe(stale)}, "
              "which no longer runs", file=sys.stderr)  # fmt: skip
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(_me()) + "\n").encode())
    os.fsync(fd)
    return fd


def _lock(fd: int, file: Path) -> dict[str, Any] | None:
    """Locks the open lock file; returns the stale holder it names, if any."""
    before = holder(file)
    try:
        if fcntl is None:
            raise OSError(errno.ENOLCK, "no record locks")
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EAGAIN) or _alive(before):
            raise Busy(
                f"{file.parent} is in use by {describe(holder(file) or before)}; "
                "one process at a time may write it: wait for that one to end or stop it"
            ) from None
    return before


def _alive(info: dict[str, Any] | None) -> bool:
    """Whether the holder a lock file names may still run (only checkable on this host)."""
    if info is None:
        return False
    if info.get("host") != platform.node():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return info["pid"] != os.getpid()


def _drop(key: str) -> None:
    with _GUARD:
        held = _HELD.get(key)
        if held is None or held.pid != os.getpid():  # a forked child holds nothing
            return
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[key]
        try:
            if os.path.exists(key) and os.path.samestat(os.fstat(held.fd), os.stat(key)):
                os.unlink(key)
        finally:
            os.close(held.fd)  # drops the record lock
        _remove_empty(held.created)
