"""What a run shows while it works: progress bars with an ETA, and ``log.txt`` in its directory.

On a terminal the bars are drawn with rich; otherwise a plain line per bar now and then. Every
echoed line also goes to the ``epgkit`` logger, which ``log_to`` tees into ``log.txt``.
Progress within an epoch comes from an executor wrapper that counts finished inner loops.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from epgkit.method.executor import Executor

LOG = "log.txt"
PLAIN_EVERY = 30.0  # seconds between two plain progress lines of a bar
log = logging.getLogger("epgkit")


# ----------------------------------------------------------------------------- log.txt
@contextmanager
def log_to(directory: str | Path) -> Iterator[Path]:
    """Writes the ``epgkit`` logger's INFO lines into ``directory/log.txt`` (appending).

    While it is open the logger does not propagate: its lines are the ones already printed,
    and gin's parsing leaves a root handler that would print them a second time on stderr.
    """
    path = Path(directory) / LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    level, propagate = log.level, log.propagate
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)
        # Nested runs (a sweep's points) restore what they found; the outermost restores all.
        log.propagate = propagate


class _LogFile(logging.FileHandler):
    """``log.txt``, where a line that cannot be written (a full disk) is left out: logging would
    print a traceback for it, and the error that stops the run is reported once, in one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        with suppress(OSError):
            super().close()  # flushes what is left


# ----------------------------------------------------------------------------- progress
def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Bar:
    """One line of progress: ``done`` of ``total`` with the time left at the current pace.

    Args:
        rich: The rich display to draw on, or None for plain lines through ``plain``.
        plain: Where plain lines go.
        label: What is counted.
        total: How many there are.
        done: How many are done already (a resumed run's epochs).
        lines: Whether plain output shows this bar at all.
    """

    def __init__(
        self,
        rich: Any,
        plain: Callable[[str], None],
        label: str,
        total: int,
        done: int,
        lines: bool,
    ) -> None:
        self._rich, self._plain, self.label, self.total, self.done = rich, plain, label, total, done
        self._lines, self._printed = lines, -math.inf
        self._start_done, self._started = done, time.perf_counter()
        self._id = None if rich is None else rich.add_task(label, total=total, completed=done)

    def eta(self) -> float:
        """Seconds left, from the pace since this bar started (a resumed run's past excluded)."""
        elapsed, made = time.perf_counter() - self._started, self.done - self._start_done
        return math.inf if made <= 0 else elapsed / made * (self.total - self.done)

    def update(self, done: int | None = None, total: int | None = None, advance: int = 0) -> None:
        """Sets or advances the count; a new ``total`` restarts the pace (a new epoch)."""
        if total is not None:
            self.total, self._start_done, self._started = total, 0, time.perf_counter()
        self.done = (self.done if done is None else done) + advance
        if self._rich is not None:
            if total is not None:
                self._rich.reset(self._id, total=total, completed=self.done)
            else:
                self._rich.update(self._id, completed=self.done)
        elif self._lines and (advance or done is not None):
            now = time.perf_counter()
            # A line at the first step, the last, and at most one per PLAIN_EVERY seconds.
            first = self._printed == -math.inf
            if first or self.done >= self.total or now - self._printed >= PLAIN_EVERY:
                self._printed = now
                self._plain(
                    f"  {self.label}: {self.done}/{self.total}, "
                    f"{_clock(now - self._started)} elapsed, ETA {_clock(self.eta())}"
                )

    def close(self) -> None:
        """Removes the bar from the display."""
        if self._rich is not None:
            self._rich.remove_task(self._id)


class Progress:
    """Progress bars (rich) on a terminal; otherwise a plain line per bar now and then.

    Args:
        echo: Where plain lines go (``typer.echo`` in the CLI).
        live: Draw rich bars; default: whether stdout is a terminal.
        console: A ``rich.console.Console`` to draw on (tests); default: stdout.
    """

    def __init__(
        self,
        echo: Callable[[str], None] = print,
        live: bool | None = None,
        console: Any = None,
    ) -> None:
        self._plain = echo
        self.live = sys.stdout.isatty() if live is None else live
        self._console = console
        self._rich: Any = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console or Console(),
                transient=True,  # the echoed lines stay; the bars go when the work is done
            )
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def echo(self, line: str) -> None:
        """Prints a line above the bars and logs it to the ``epgkit`` logger (log.txt)."""
        log.info(line)
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self._plain(line)

    def bar(self, label: str, total: int, done: int = 0, lines: bool = True) -> Bar:
        """A new bar; ``lines=False`` keeps it off plain output (for fast inner counts)."""
        return Bar(self._rich, self._plain, label, total, done, lines)


class CountingExecutor:
    """Runs like the executor it wraps and advances ``bar`` as each task finishes.

    Tasks are watched one by one when the executor's ``map`` takes an ``on_done(index)``
    callback (every executor of epgkit's does); any other is counted when ``map`` returns.

    Args:
        executor: The executor that does the work.
        bar: Advanced by each finished task.
        per_call: Reset ``bar`` to the size of every ``map`` call (an epoch of evolve);
            otherwise the bar's total covers all calls (training maps once).
        size: How many units (inner loops) a task's arguments hold; by default the length of
            its last argument, the list of jobs of ``run_batch``.
    """

    def __init__(
        self,
        executor: Executor,
        bar: Bar,
        per_call: bool = True,
        size: Callable[[Sequence[Any]], int] | None = None,
    ) -> None:
        self.executor, self.bar, self.per_call = executor, bar, per_call
        self.size = size or (lambda item: len(item[-1]))

    @property
    def dashboard(self) -> str | None:
        """The URL of the wrapped cluster's dashboard, when it serves one (printed by the run)."""
        return getattr(self.executor, "dashboard", None)

    def map(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        sizes = [self.size(item) for item in items]
        if self.per_call:
            self.bar.update(done=0, total=sum(sizes))
        if "on_done" in inspect.signature(self.executor.map).parameters:
            return self.executor.map(fn, items, on_done=lambda i: self.bar.update(advance=sizes[i]))
        results = self.executor.map(fn, items)  # an executor we cannot watch: count at the end
        self.bar.update(advance=sum(sizes))
        return results
