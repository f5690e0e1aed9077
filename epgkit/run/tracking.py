"""Watching a run: the trackers that tie a run to its progress bars, ``log.txt`` and wandb.

Nothing here changes what a run computes. Each epoch's metrics come straight from the outer
loop (``EvolutionTracker.epoch`` is the ``on_epoch`` of ``launch.run_evolution``), once the
epoch is complete and checkpointed: the display and wandb show what ``metrics.jsonl`` holds,
without reading it back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from epgkit.run.cluster import Executor
from epgkit.run.progress import CountingExecutor, Progress, log_to
from epgkit.run.rundir import METRICS
from epgkit.run.wandb_log import WandbOptions, WandbRun, gin_values

if TYPE_CHECKING:
    from epgkit.run.launch import Prepared

log = logging.getLogger("epgkit")


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
        exp = prepared.exp
        self.progress, self.wandb, self._on_epoch = progress, wandb, on_epoch
        self.next_epoch = prepared.done
        self.epochs = progress.bar("epochs", exp.epochs, self.next_epoch, lines=epoch_lines)
        self.inner = progress.bar("inner loops", exp.inner_loops, lines=False)

    def echo(self, line: str) -> None:
        """Prints and logs a line."""
        self.progress.echo(line)

    def wrap(self, executor: Executor) -> Executor:
        """The executor to evolve with: it counts the inner loops of the current epoch."""
        return CountingExecutor(executor, self.inner)

    def epoch(self, metrics: dict[str, Any]) -> None:
        """Reports one finished epoch's metrics (``run_evolution``'s ``on_epoch``)."""
        if metrics["epoch"] < self.next_epoch:
            return
        self.next_epoch = metrics["epoch"] + 1
        self.epochs.update(done=self.next_epoch)
        if self.wandb is not None:
            self.wandb.log(metrics, step=metrics["epoch"])
        self._on_epoch(metrics)

    def close(self) -> None:
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

    Use as ``run_evolution(prepared, tracker.wrap(executor), tracker.echo, tracker.epoch)``.

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
