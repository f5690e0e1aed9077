"""Where an evolved loss is read from: a run directory (its best loss), a loss file, or the
zoo (``zoo:NAME``). ``epgkit train`` tests one; ``Experiment.init_loss`` starts an ES from one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from epgkit.run import zoo
from epgkit.run.rundir import BEST_LOSS, LAST_LOSS, RunDir, RunDirError, load_loss


@dataclasses.dataclass(frozen=True)
class Source:
    """An evolved loss and the config it was evolved with."""

    phi: np.ndarray
    meta: dict[str, Any]
    path: Path


def load_source(source: str) -> Source:
    """A loss from a run directory (its best loss), a loss file, or the zoo (``zoo:NAME``).

    Raises:
        RunDirError: Nothing loadable there, or a loss file without its operative config.
        KeyError: An unknown zoo name (the message lists the known ones).
    """
    path = zoo.path(source) if source.startswith(zoo.PREFIX) else Path(source)
    if path.is_dir():
        for name in (BEST_LOSS, LAST_LOSS):
            if (path / name).is_file():
                path = path / name
                break
        else:
            if RunDir(path).is_run():  # stopped before its first epoch ended
                raise RunDirError(
                    f"{source} holds a run that has finished no epoch yet, so no loss to use: "
                    f"continue it first (`epgkit evolve --resume {source}`)"
                )
            raise RunDirError(f"{source} holds no {BEST_LOSS} or {LAST_LOSS}: not an epgkit run")
    elif not path.is_file():
        raise RunDirError(f"{source}: no such run directory or loss file")
    phi, meta = load_loss(path)
    if not isinstance(meta.get("operative_config"), str):
        raise RunDirError(f"{path} records no operative config; cannot rebuild its loss")
    return Source(phi, meta, path)
