"""The run directory: configs, metadata, metrics, per-inner-loop records, checkpoints, losses.

Layout: ``config.gin`` (every binding of the run), ``operative_config.gin`` (what was used),
``meta.json`` (argv, versions, git sha), ``metrics.jsonl`` (a line per epoch),
``inner_loops.jsonl`` (a line per inner loop, with its seeds), ``checkpoint.pt`` (the full ES
state, written atomically), ``best_loss.pt`` and ``loss.pt`` (φ), ``plots/``, and ``lock``
while a process writes the run (``epgkit.run.lock``).
Files hold tensors, numbers and strings only and load with ``torch.load(weights_only=True)``,
which never executes code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epgkit.run import provenance
from epgkit.run.paths import naming

METRICS = "metrics.jsonl"
RECORDS = "inner_loops.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST_LOSS = "best_loss.pt"
LAST_LOSS = "loss.pt"
OPERATIVE = "operative_config.gin"
META = "meta.json"
#: What a test-time training writes beside its ``config.gin`` (not a run: nothing to resume).
SUMMARY = "summary.json"
#: What a sweep's directory holds (``epgkit.run.sweep``): not a run either.
SWEEP_JSON = "sweep.json"

#: What every checkpoint holds besides the strategy's state (whose keys the strategy checks when
#: it loads them: ``phi``, ``m``, ``v``, ``step`` for OpenES): the epochs done, the best loss, and
#: the log lines of the last epoch (so that a crash between the checkpoint and the logs' appends
#: loses nothing).
CHECKPOINT_KEYS = {"epoch": int, "env_steps": int, "best_fitness": float,
                   "best_phi": torch.Tensor, "metrics_line": str, "records": str}  # fmt: skip
#: The checkpoint's digest of each log's lines (JSON: file name → sha256), so that a resume
#: refuses a log edited anywhere, not only in the last epoch's lines. Runs checkpointed before
#: it existed have none and resume without that check.
LOG_DIGESTS = "log_digests"
#: What a run stopped before it wrote its ``config.gin`` leaves (its lock, log and meta.json, the
#: empty plots folder, W&B's folder under ``--wandb``, opened first): the only folder besides a
#: new or empty one that a new run starts in.
LEFTOVERS = frozenset({"lock", "log.txt", META, "plots", "wandb"})


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (exists, missing, corrupt)."""


def log_line(row: dict[str, Any]) -> str:
    """A log line as the run writes it (without its newline); parsing it and writing it again
    gives the same text."""
    return json.dumps(json_safe(row))


def digest(lines: Iterable[str], start: Any = None) -> Any:
    """A sha256 over log lines (``start``, a hashlib object, carried on), as
    ``LOG_DIGESTS`` keeps it."""
    h = hashlib.sha256() if start is None else start.copy()
    for line in lines:
        h.update(line.encode() + b"\n")
    return h


def json_safe(value: Any) -> Any:
    """Non-finite floats become null so every line is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``.

    An OS error (a full disk) leaves ``path`` as it was and names it.
    """
    with naming(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with naming(path), os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a text file whole or not at all: a kill mid-write (or a full disk) leaves the old
    file; an OS error names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path), open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def safe_load(path: Path, required: dict[str, type]) -> dict[str, Any]:
    """Loads a file saved by epgkit without executing code; checks its keys and types."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001  (any unpickling failure means a bad file)
        raise RunDirError(
            f"{path} is not a readable epgkit file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path} does not hold an epgkit dictionary")
    for key, kind in required.items():
        if not isinstance(obj.get(key), kind):
            raise RunDirError(f"{path} lacks {key!r} of type {kind.__name__}")
    return obj


def save_loss(path: Path, phi: np.ndarray, meta: dict[str, Any]) -> None:
    """Writes φ with its provenance (the operative config, the env, the epoch)."""
    atomic_save(
        {
            "phi": torch.tensor(np.asarray(phi), dtype=torch.float32),
            "meta": json.dumps(json_safe(meta)),
        },
        path,
    )


def load_loss(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """φ and its metadata from a loss file, refusing anything else."""
    obj = safe_load(Path(path), {"phi": torch.Tensor, "meta": str})
    try:
        meta = json.loads(obj["meta"])
    except json.JSONDecodeError:
        raise RunDirError(f"{path}: its metadata is not valid JSON") from None
    return obj["phi"].numpy().astype(np.float32), meta


def jsonl_rows(path: Path, text: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of every complete line of a JSON-lines file; blank lines skipped.

    A last line without its newline is an append that a crash cut short: it is left out (the
    file is only read; ``epgkit evolve --resume`` cuts it). ``text``, if given, is the file's
    content read by the caller (from its ``.gz``, say); ``path`` then only names it.

    Raises:
        RunDirError: The file is not text, or a complete line is not a JSON object (naming the
            file and the line).
    """
    try:
        text = path.read_text() if text is None else text
    except UnicodeDecodeError as err:
        raise RunDirError(f"{path}: not text ({err.reason})") from None
    rows = []
    for number, line in enumerate(text[: text.rfind("\n") + 1].split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunDirError(f"{path}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise RunDirError(f"{path}, line {number}: not a JSON object")
        rows.append((number, row))
    return rows


class RunDir:
    """One run's folder; every write is an append or an atomic replace."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._digests: dict[str, Any] = {}  # log name → sha256 of its lines so far

    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a run, or a training's output."""
        return any((self.path / name).exists() for name in ("config.gin", CHECKPOINT, METRICS))

    def is_run(self) -> bool:
        """Whether the folder holds an evolution that ``--resume`` can continue: ``create``
        writes ``meta.json`` before ``config.gin``, and a training writes no ``meta.json``."""
        return (self.path / "config.gin").is_file() and (self.path / META).is_file()

    def check_free(self) -> None:
        """Refuses a folder that already holds a run, a sweep or anything else but what a run
        stopped before its config left (nothing there is touched)."""
        if (self.path / SUMMARY).exists():
            raise RunDirError(
                f"{self.path} holds a test-time training's output; choose another --run-dir"
            )
        if self.holds_run():
            raise RunDirError(
                f"{self.path} already holds a run; pass --resume {self.path} to "
                "continue it or choose another --run-dir"
            )
        others = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        if SWEEP_JSON in others:
            raise RunDirError(
                f"{self.path} holds a sweep (re-running the sweep's command continues it); "
                "choose another --run-dir"
            )
        if others := [name for name in others if name not in LEFTOVERS]:
            shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
            raise RunDirError(
                f"{self.path} is not empty ({shown}); a run starts in a new or empty directory "
                "so that it overwrites nothing: choose another --run-dir"
            )

    def create(self, config: str, files: list[str]) -> None:
        """Starts a new run; refuses a folder that already holds one."""
        self.check_free()
        (self.path / "plots").mkdir(parents=True, exist_ok=True)
        meta = {
            "argv": sys.argv,
            "cwd": os.getcwd(),  # where relative config files and the user's modules were found
            "config_files": files,
            "versions": provenance.versions(),
            **provenance.git_state(),
            "host": platform.node(),
        }
        atomic_write_text(self.path / META, json.dumps(meta, indent=2) + "\n")
        atomic_write_text(self.path / "config.gin", config)  # last: now it is a run (is_run)

    def write_operative(self, text: str) -> None:
        """Writes the operative gin config (the values actually used)."""
        atomic_write_text(self.path / OPERATIVE, text)

    def append(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Appends JSON lines to ``name``."""
        with naming(self.path / name), open(self.path / name, "a") as f:
            f.writelines(log_line(r) + "\n" for r in rows)

    def metrics(self) -> list[dict[str, Any]]:
        """Every epoch's metrics so far."""
        path = self.path / METRICS
        if not path.exists():
            return []
        return [row for _, row in jsonl_rows(path)]

    def checkpoint(self) -> dict[str, Any] | None:
        """The last complete checkpoint, or None before the first epoch."""
        return self.load_checkpoint() if (self.path / CHECKPOINT).exists() else None

    def save_epoch(
        self, state: dict[str, Any], records: list[dict[str, Any]], metrics: dict[str, Any]
    ) -> None:
        """Keeps a finished epoch. The checkpoint holds the epoch's log lines too, and the logs
        are appended only once it is complete, so a kill at any moment leaves a run that
        ``epgkit.run.resume`` can complete (or refuses)."""
        lines = {"metrics_line": json.dumps(metrics), "records": json.dumps(records)}
        after = {
            RECORDS: digest(map(log_line, records), self._log_digest(RECORDS)),
            METRICS: digest([log_line(metrics)], self._log_digest(METRICS)),
        }
        sums = json.dumps({name: h.hexdigest() for name, h in after.items()})
        self.save_checkpoint({**state, **lines, LOG_DIGESTS: sums})
        self.append(RECORDS, records)
        self.append(METRICS, [metrics])
        self._digests = after

    def _log_digest(self, name: str) -> Any:
        """The digest of a log's lines so far: read once from the file (which a resume has
        checked against the checkpoint), then carried from epoch to epoch."""
        if name not in self._digests:
            path = self.path / name
            rows = jsonl_rows(path) if path.exists() else []
            self._digests[name] = digest(log_line(row) for _, row in rows)
        return self._digests[name]

    def save_loss(self, best: bool, phi: np.ndarray, meta: dict[str, Any]) -> None:
        """Writes the best loss so far (``best_loss.pt``) or the latest φ (``loss.pt``)."""
        save_loss(self.path / (BEST_LOSS if best else LAST_LOSS), phi, meta)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically replaces the checkpoint."""
        atomic_save(state, self.path / CHECKPOINT)

    def load_checkpoint(self) -> dict[str, Any]:
        """The last complete checkpoint, refused unless it holds all that ``evolve`` reads."""
        return safe_load(self.path / CHECKPOINT, CHECKPOINT_KEYS)
