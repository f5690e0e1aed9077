"""Weights & Biases logging: a run's options, its gin config as wandb's config, one wandb run.

wandb is optional (``pip install 'epgkit[wandb]'``) and imported only when a run is created;
without it ``--wandb`` is refused in one line before anything is written. It runs offline
unless the user set ``WANDB_MODE``, and writes into the run directory
(``<run>/wandb/offline-run-*``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epgkit.errors import ConfigError


@dataclass(frozen=True)
class WandbOptions:
    """Where wandb runs go: a project, and a group that gathers the points of a sweep."""

    project: str = "epgkit"
    group: str | None = None

    def __post_init__(self) -> None:
        # Checked where the CLI reads --wandb, before a run directory exists.
        if not wandb_installed():
            raise ConfigError(
                "--wandb needs the wandb package, which is not installed: "
                "pip install 'epgkit[wandb]' (or run without --wandb)"
            )


def wandb_installed() -> bool:
    """Whether ``import wandb`` can work, without paying for the import."""
    try:
        return importlib.util.find_spec("wandb") is not None
    except ValueError:  # sys.modules maps it to None: its import is blocked
        return False


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
