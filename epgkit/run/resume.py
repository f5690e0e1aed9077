"""What a resume checks before it writes anything, and the one repair it makes.

An epoch commits in this order (``evolve``): ``best_loss.pt`` and ``loss.pt``, then
``checkpoint.pt`` (each replaced atomically), then its records are appended to
``inner_loops.jsonl``, then its line to ``metrics.jsonl``. The checkpoint also holds those
lines. A kill at any moment therefore leaves one of:

1. the checkpoint and the logs at epoch e (the losses may already hold epoch e's φ, which the
   resumed epoch e, repeating the same draws, writes again bit for bit);
2. the checkpoint at e + 1, the logs at e, with some of epoch e's records appended and the
   last one maybe torn (no newline);
3. the checkpoint and the records at e + 1, the metrics at e, maybe with a torn last line.

So the logs may lack lines of the last checkpointed epoch only, and may end in a torn line.
Resuming cuts the torn line and appends the missing lines from the checkpoint; it never removes
a complete line. Anything else (a log missing earlier epochs or ahead of the checkpoint, lines
that differ from what the checkpoint holds, logs without a checkpoint) is not a crash's doing
and is refused, naming what disagrees, with the run directory untouched. The checkpoint holds
the last epoch's lines and a digest of all of them, so an edit anywhere is caught.

A run kept in version control may hold its (large) ``inner_loops.jsonl`` gzipped, as
``inner_loops.jsonl.gz``: where the log itself is missing, resuming unpacks that beside it (the
``.gz`` is left as it is) and checks it like the log.

The config a resume rebuilds is compared with ``operative_config.gin`` (what the run used, with
every default): editing ``config.gin`` is refused like a ``-b`` change, binding by binding.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gin.config import ParserDelegate
from gin.config_parser import BindingStatement, ConfigParser

from epgkit.errors import ConfigError
from epgkit.method.evolve import load_state
from epgkit.method.strategies import Strategy
from epgkit.run.paths import check_dir, exists
from epgkit.run.renamed import upgrade
from epgkit.run.rundir import (
    CHECKPOINT,
    LOG_DIGESTS,
    META,
    METRICS,
    OPERATIVE,
    RECORDS,
    SUMMARY,
    SWEEP_JSON,
    RunDir,
    RunDirError,
    digest,
    jsonl_rows,
    log_line,
)


@dataclass(frozen=True)
class LogRepair:
    """What makes the logs agree with the checkpoint: logs kept gzipped unpacked, torn last
    lines cut, then lines appended (records before metrics, as an epoch commits them)."""

    cuts: tuple[tuple[Path, int], ...] = ()  # (file, size of its complete lines)
    appends: tuple[tuple[Path, tuple[str, ...]], ...] = ()  # (file, lines without newline)
    unpack: tuple[Path, ...] = ()  # logs to restore from their .gz first

    def apply(self) -> None:
        for path in self.unpack:
            partial = path.with_name(path.name + ".unpacking")
            partial.write_bytes(_unpacked(path))
            os.replace(partial, path)  # a kill mid-way leaves no half log under the log's name
        for path, size in self.cuts:
            with open(path, "r+b") as f:
                f.truncate(size)
        for path, lines in self.appends:
            with open(path, "a") as f:
                f.writelines(f"{line}\n" for line in lines)


def plan_repair(run_path: Path, ckpt: dict[str, Any] | None) -> LogRepair:
    """Checks the logs against the checkpoint (reading only); returns what completes them.

    Raises:
        RunDirError: The logs and the checkpoint disagree in a way no crash leaves.
    """
    metrics, records = run_path / METRICS, run_path / RECORDS
    if ckpt is None:
        for path in (metrics, records):
            if path.exists() and path.stat().st_size:
                raise RunDirError(
                    f"{path} holds epochs but {run_path / CHECKPOINT} is missing, so the run "
                    "cannot continue from them; restore the checkpoint or start a new run"
                )
        return LogRepair()
    done = ckpt["epoch"]
    last_records = [log_line(r) for r in json.loads(ckpt["records"])]
    w = len(last_records)
    last_metrics = [log_line(json.loads(ckpt["metrics_line"]))]
    sums = json.loads(ckpt.get(LOG_DIGESTS, "{}"))
    cuts, appends, unpack = [], [], []
    for path, per_epoch, last in ((records, w, last_records), (metrics, 1, last_metrics)):
        if not path.exists() and _packed(path).is_file():
            unpack.append(path)
        rows, size = _complete(path)
        if size is not None:
            cuts.append((path, size))
        kept = _check(path, rows, per_epoch, done, last)
        if path.name in sums:
            _check_digest(path, rows[: (done - 1) * per_epoch], last, sums[path.name], done)
        if kept < len(last):
            appends.append((path, tuple(last[kept:])))
    return LogRepair(tuple(cuts), tuple(appends), tuple(unpack))


def _packed(path: Path) -> Path:
    return path.with_name(path.name + ".gz")


def _unpacked(path: Path) -> bytes:
    """The content of a log's ``.gz``."""
    try:
        return gzip.decompress(_packed(path).read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise RunDirError(f"{_packed(path)} cannot be unpacked ({err}); cannot resume") from None


def _check_digest(path: Path, earlier: list, last: list[str], expected: str, done: int) -> None:
    """Refuses a log whose lines before the last epoch (which ``_check`` compares line by line)
    are not those the run wrote: the checkpoint holds the digest of all of them."""
    if digest([*(log_line(row) for _, row in earlier), *last]).hexdigest() != expected:
        span = "epoch 0" if done == 2 else f"epochs 0 to {done - 2}"
        raise RunDirError(
            f"{path}: the lines of {span} are not those the run wrote ({CHECKPOINT} holds "
            "their digest); the log was edited, cannot resume. Restore it (or its .gz) or "
            "start a new run"
        )


def _complete(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
    """The complete lines of a log (or of its ``.gz`` where it is missing), and the size to
    cut it to if its last line is torn."""
    if path.exists():
        data = path.read_bytes()
    elif _packed(path).is_file():
        data = _unpacked(path)
    else:
        return [], None
    end = data.rfind(b"\n") + 1
    try:
        rows = jsonl_rows(path, data.decode())
    except UnicodeDecodeError as err:
        raise RunDirError(f"{path}: not text ({err.reason})") from None
    return rows, (end if end != len(data) else None)


def _check(path: Path, rows: list, per_epoch: int, done: int, last: list[str]) -> int:
    """Checks a log holds epochs 0 .. done - 1 in order, ``per_epoch`` lines each, with the last
    epoch's lines a prefix of the checkpoint's ``last``; returns how many of those it holds."""
    first_of_last = (done - 1) * per_epoch
    for k, (number, row) in enumerate(rows):
        epoch = row.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise RunDirError(f"{path}, line {number}: not an epoch's line; cannot resume")
        if k >= done * per_epoch and epoch < done:  # a line of a done epoch, once too many
            raise RunDirError(
                f"{path}, line {number}: a line of epoch {epoch} after the {done} epochs "
                f"{CHECKPOINT} has done; the log was edited or written twice, cannot resume"
            )
        if k >= done * per_epoch:
            raise RunDirError(
                f"{path}, line {number}: epoch {epoch} is beyond the {done} epochs "
                f"{CHECKPOINT} has done; the log and the checkpoint disagree, cannot resume"
            )
        if epoch != k // per_epoch:
            raise RunDirError(
                f"{path}, line {number}: epoch {epoch} where epoch {k // per_epoch} belongs; "
                "the log was edited or written twice, cannot resume"
            )
        if k >= first_of_last and json.loads(last[k - first_of_last]) != row:
            raise RunDirError(
                f"{path}, line {number}: epoch {epoch} differs from what {CHECKPOINT} holds "
                "for it; the log and the checkpoint disagree, cannot resume"
            )
    if len(rows) < first_of_last:
        lost = len(rows) // per_epoch
        span = f"epoch {lost}" if lost >= done - 2 else f"epochs {lost} to {done - 2}"
        raise RunDirError(
            f"{path} lacks {span} of the {done} epochs {CHECKPOINT} has done (only the last "
            "can be restored from it); restore the log (or its .gz) or start a new run"
        )
    return len(rows) - max(first_of_last, 0)


def gin_bindings(text: str, where: str) -> dict[str, str]:
    """Every binding of a gin text, by its full name (``scope/Configurable.param``), as the
    repr of its parsed value."""
    try:
        statements = list(ConfigParser(text, ParserDelegate(skip_unknown=True)))
    except Exception as err:  # noqa: BLE001  (gin raises several kinds for a damaged file)
        raise RunDirError(f"{where} cannot be read as gin ({err})") from None
    return {
        f"{st.scope + '/' if st.scope else ''}{st.selector}.{st.arg_name}": repr(st.value)
        for st in statements
        if isinstance(st, BindingStatement)
    }


def check_config(
    run_path: Path, operative: str, phi_size: int, ckpt: dict[str, Any] | None,
    free: Callable[[str], bool], strategy: Strategy,
) -> None:  # fmt: skip
    """Refuses a rebuilt config that differs from the one the run used (except bindings
    whose name is ``free``), whose φ does not have the checkpoint's size (which a changed loss
    or another epgkit version may cause without any binding changing), or whose strategy cannot
    read the checkpoint's state.

    Bindings present on one side only (a parameter added or removed by another epgkit
    version) are not compared; a run directory without ``operative_config.gin`` is compared
    on φ's size alone.
    """
    recorded = run_path / OPERATIVE
    if recorded.is_file():
        # A run recorded before Launch names where it ran Experiment.workers and the like.
        before = gin_bindings(upgrade(recorded.read_text()), str(recorded))
        now = gin_bindings(operative, "")
        changed = [
            f"{name} ({before[name]} when the run started, {now[name]} now)"
            for name in sorted(before.keys() & now.keys())
            if not free(name) and before[name] != now[name]
        ]
        if changed:
            raise ConfigError(
                f"--resume {run_path} continues the run as it was configured; it cannot change "
                f"{', '.join(changed)}. Restore its config.gin, or start a new run to try other "
                "settings."
            )
    if ckpt is None:
        return
    # best_phi: every checkpoint has it, of φ's size, whatever the strategy.
    if ckpt["best_phi"].numel() != phi_size:
        raise ConfigError(
            f"--resume {run_path}: {CHECKPOINT} holds a φ of {ckpt['best_phi'].numel():,} "
            f"numbers but the config now builds a loss with {phi_size:,}; a resumed run "
            "continues as it was configured, so start a new run to try another loss"
        )
    try:
        state = load_state(strategy, ckpt)
    except ValueError as err:
        raise ConfigError(
            f"--resume {run_path}: {CHECKPOINT} does not hold a state of "
            f"{type(strategy).__name__} ({err}); a resumed run continues with the strategy it "
            "started with"
        ) from None
    if strategy.mean(state).size != phi_size:
        raise ConfigError(
            f"--resume {run_path}: {CHECKPOINT} holds a {type(strategy).__name__} state of "
            f"{strategy.mean(state).size:,} numbers but the loss has {phi_size:,}"
        )


def check_resumable(resume: str) -> None:
    """Refuses a ``--resume`` of anything but an evolution's run directory (a training's
    output, a folder with a config.gin copied in), before its lock is taken."""
    if not exists(resume, "--resume"):
        raise RunDirError(f"--resume {resume}: no such directory")
    run = RunDir(resume)
    if not run.is_run():
        if (run.path / SWEEP_JSON).exists():
            what = (
                "a sweep's directory: re-run the sweep's own command to resume it, or resume "
                f"one of its points (`epgkit evolve --resume {resume}/POINT`)"
            )
        elif (run.path / SUMMARY).exists():
            what = "a test-time training's output, not an evolution"
        elif (run.path / "log.txt").exists() and not (run.path / "config.gin").exists():
            what = (
                "a run stopped before it wrote its config, so nothing to resume: start it "
                f"again (`epgkit evolve CONFIG --run-dir {resume}` reuses the directory)"
            )
        else:
            what = "not an epgkit run directory"
        raise RunDirError(
            f"--resume {resume}: {what} (a run that `epgkit evolve` started holds config.gin "
            f"and {META})"
        )
    check_dir(resume, "--resume")  # a read-only place
