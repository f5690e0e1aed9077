"""Watching a run: a progress display with ETA, ``log.txt`` in the run directory, and wandb.

Nothing here changes what a run computes. The per-epoch metrics are read from the run's own
``metrics.jsonl`` (appended by ``evolve`` once an epoch is complete and checkpointed), so the
display and wandb show exactly what the log holds, also after a resume. Progress within an
epoch comes from an executor wrapper that counts finished inner loops.

wandb is optional and imported only when asked for. It runs offline unless the user set
``WANDB_MODE``, and writes into the run directory (``<run>/wandb/offline-run-*``).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from epgkit.cluster import Executor, InProcess
from epgkit.rundir import METRICS

if TYPE_CHECKING:
    from epgkit.launch import Prepared

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
    handler = logging.FileHandler(path, encoding="utf-8")
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

    Tasks are watched one by one when the executor runs in this process, or when its ``map``
    takes an ``on_done(index)`` callback; any other executor is counted when ``map`` returns.

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

    def map(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        sizes = [self.size(item) for item in items]
        if self.per_call:
            self.bar.update(done=0, total=sum(sizes))
        if "on_done" in inspect.signature(self.executor.map).parameters:
            return self.executor.map(fn, items, on_done=lambda i: self.bar.update(advance=sizes[i]))
        if isinstance(self.executor, InProcess):
            results = []
            for item, n in zip(items, sizes, strict=True):
                results.append(fn(*item))
                self.bar.update(advance=n)
            return results
        results = self.executor.map(fn, items)  # an executor we cannot watch: count at the end
        self.bar.update(advance=sum(sizes))
        return results


# ----------------------------------------------------------------------------- wandb
@dataclass(frozen=True)
class WandbOptions:
    """Where wandb runs go: a project, and a group that gathers the points of a sweep."""

    project: str = "epgkit"
    group: str | None = None


def gin_values(text: str) -> dict[str, Any]:
    """``{"OpenES.sigma": 0.05, ...}`` from a gin config text, for wandb's config table.

    Values that are Python literals become numbers, strings, tuples; others (``@PPOLoss()``)
    stay as their gin text. Gin wraps long values over indented continuation lines.
    """
    import ast

    texts: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        part = line.strip().removesuffix("\\").strip()
        if not part or part.startswith(("#", "import ", "include ")):
            continue
        binding = re.match(r"([\w./]+)\s*=\s*(.*)", part)
        if binding and not line[0].isspace():
            key, texts[binding[1]] = binding[1], binding[2]
        elif key is not None:
            texts[key] = f"{texts[key]} {part}".strip()
    values: dict[str, Any] = {}
    for name, value in texts.items():
        try:
            values[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            values[name] = value
    return values


class WandbRun:
    """One wandb run written into ``run_dir``; a resumed run continues the same wandb id.

    Args:
        run_dir: The run directory (wandb writes ``run_dir/wandb``).
        options: Project and group.
        name: The run's display name.
        job_type: ``evolve`` or ``train``.
        config: The values shown as the run's config.
    """

    ID_FILE = "epgkit_run_id"

    def __init__(
        self,
        run_dir: Path,
        options: WandbOptions,
        name: str,
        job_type: str,
        config: dict[str, Any],
    ) -> None:
        # No network here, and a user without an account must not be asked to log in.
        os.environ.setdefault("WANDB_MODE", "offline")
        import wandb

        self._wandb = wandb
        folder = run_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / self.ID_FILE
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(4) + "\n")  # wandb ids: [a-z0-9]
        self.run = wandb.init(
            project=options.project,
            group=options.group,
            name=name,
            job_type=job_type,
            dir=str(run_dir),
            id=id_file.read_text().strip(),
            resume="allow",
            config=config,
            settings=wandb.Settings(
                console="off",  # our own lines and bars stay ours
                silent=True,
                disable_git=True,
                x_disable_stats=True,
                x_save_requirements=False,
            ),
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Logs one step's numbers (non-finite ones as wandb's NaN)."""
        row = {k: (math.nan if v is None else v) for k, v in metrics.items()}
        self.run.log(row, step=step)

    def finish(
        self,
        files: Sequence[Path] = (),
        images: Sequence[Path] = (),
        summary: dict[str, Any] | None = None,
        failed: bool = False,
    ) -> None:
        """Attaches files (copied, so the offline run is self-contained) and plots; closes."""
        for path in files:
            if path.is_file():
                shutil.copy2(path, Path(self.run.dir) / path.name)
        pictures = {f"plots/{p.stem}": self._wandb.Image(str(p)) for p in images if p.is_file()}
        if pictures:
            self.run.log(pictures)
        for k, v in (summary or {}).items():
            self.run.summary[k] = v
        self.run.finish(exit_code=1 if failed else 0)


# ----------------------------------------------------------------------------- trackers
class _Feed:
    """Complete lines appended to a JSON-lines file since the feed was opened.

    It starts after the last complete line: a torn tail left by a crash is cut by ``evolve``
    on resume, and the lines written after it start there.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes() if path.exists() else b""
        self.offset = data.rfind(b"\n") + 1
        complete = [x for x in data[: self.offset].splitlines() if x.strip()]
        self.last = json.loads(complete[-1]) if complete else None

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


class EvolutionTracker:
    """What watches one evolution: epoch and inner-loop bars, log.txt lines, wandb."""

    def __init__(
        self,
        prepared: Prepared,
        progress: Progress,
        wandb: WandbRun | None,
        on_epoch: Callable[[dict[str, Any]], None],
        epoch_lines: bool = True,
    ) -> None:
        exp, run = prepared.exp, prepared.run
        self.progress, self.wandb, self._on_epoch = progress, wandb, on_epoch
        self._feed = _Feed(run.path / METRICS)
        self.next_epoch = 0 if self._feed.last is None else self._feed.last["epoch"] + 1
        self.epochs = progress.bar("epochs", exp.epochs, self.next_epoch, lines=epoch_lines)
        self.inner = progress.bar("inner loops", exp.inner_loops, lines=False)

    def echo(self, line: str) -> None:
        """Prints and logs a line, then takes in the epochs logged since (the CLI's echo)."""
        self.progress.echo(line)
        self.poll()

    def wrap(self, executor: Executor) -> Executor:
        """The executor to evolve with: it counts the inner loops of the current epoch."""
        return CountingExecutor(executor, self.inner)

    def poll(self) -> None:
        """Reads new lines of metrics.jsonl; each complete epoch is reported once."""
        for metrics in self._feed.read():
            self.epoch(metrics)

    def epoch(self, metrics: dict[str, Any]) -> None:
        """Reports one epoch's metrics (also usable directly as evolve's ``on_epoch``)."""
        if metrics["epoch"] < self.next_epoch:
            return
        self.next_epoch = metrics["epoch"] + 1
        self.epochs.update(done=self.next_epoch)
        if self.wandb is not None:
            self.wandb.log(metrics, step=metrics["epoch"])
        self._on_epoch(metrics)

    def close(self) -> None:
        self.poll()
        self.inner.close()
        self.epochs.close()


@contextmanager
def track_evolution(
    prepared: Prepared,
    progress: Progress,
    wandb: WandbOptions | None = None,
    name: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] = lambda m: None,
    epoch_lines: bool = True,
) -> Iterator[EvolutionTracker]:
    """Watches an evolution for its duration: ``log.txt``, bars, wandb (if ``wandb`` is set).

    Use as ``run_evolution(prepared, tracker.wrap(executor), tracker.echo)``.

    Args:
        prepared: The run, as ``launch.prepare`` made it.
        progress: The display.
        wandb: Log to wandb too; None does not import it.
        name: The wandb run's name (default: the run directory's).
        on_epoch: Called with each epoch's metrics once they are logged.
        epoch_lines: Plain ETA lines for the epochs (a sweep shows its own instead).
    """
    run = prepared.run
    with log_to(run.path):
        wb = None
        if wandb is not None:
            config = {**gin_values(prepared.meta["operative_config"]), "run_dir": str(run.path)}
            wb = WandbRun(run.path, wandb, name or run.path.name, "evolve", config)
        tracker = EvolutionTracker(prepared, progress, wb, on_epoch, epoch_lines)
        failed = True
        try:
            yield tracker
            failed = False
        except BaseException as err:
            log.error("run stopped: %s: %s", type(err).__name__, err)
            raise
        finally:
            tracker.close()
            if wb is not None:
                files = [run.path / n for n in ("config.gin", "operative_config.gin", METRICS)]
                wb.finish(files, sorted((run.path / "plots").glob("*.png")), failed=failed)


class TrainingTracker:
    """What watches a test-time training: a bar over its inner loops, then wandb."""

    def __init__(self, out: Path, progress: Progress, total: int, wandb: WandbRun | None):
        self.out, self.progress, self.wandb = out, progress, wandb
        self.bar = progress.bar("inner loops", total)
        self.values: dict[str, float] = {}

    def echo(self, line: str) -> None:
        """Prints and logs a line."""
        self.progress.echo(line)

    def wrap(self, executor: Executor) -> Executor:
        """The executor to train with: it counts finished inner loops."""
        return CountingExecutor(executor, self.bar, per_call=False)

    def summary(self, summary: dict[str, Any]) -> None:
        """Keeps the numbers of ``summary.json`` (flattened) for wandb's run summary."""
        self.values = _numbers(summary)


def _numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for k, v in tree.items():
            out.update(_numbers(v, f"{prefix}{k}/"))
        return out
    is_number = isinstance(tree, int | float) and not isinstance(tree, bool)
    return {prefix.rstrip("/"): tree} if is_number else {}


@contextmanager
def track_training(
    out: str | Path,
    progress: Progress,
    total: int,
    wandb: WandbOptions | None = None,
    config_text: str = "",
) -> Iterator[TrainingTracker]:
    """Watches a test-time training writing into ``out``: log.txt, a bar, wandb.

    On exit, wandb receives ``summary.json`` and the PNG plots found in ``out``.
    """
    out = Path(out)
    with log_to(out):
        wb = None
        if wandb is not None:
            wb = WandbRun(out, wandb, out.name, "train", gin_values(config_text))
        tracker = TrainingTracker(out, progress, total, wb)
        failed = True
        try:
            yield tracker
            failed = False
        except BaseException as err:
            log.error("training stopped: %s: %s", type(err).__name__, err)
            raise
        finally:
            tracker.bar.close()
            if wb is not None:
                pngs = sorted(out.glob("*.png"))
                wb.finish([out / "summary.json"], pngs, tracker.values, failed=failed)
