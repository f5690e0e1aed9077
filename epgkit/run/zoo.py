"""The loss zoo: evolved losses shipped inside the package, with their provenance.

Each entry is ``zoo/<name>.pt`` (φ and the operative config it was evolved with, loadable with
``torch.load(weights_only=True)``) and ``zoo/<name>.json`` (how it was made and tested).
``epgkit train zoo:<name>`` trains with one; ``epgkit list zoo`` lists them.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
PREFIX = "zoo:"


def entries() -> dict[str, dict[str, Any]]:
    """Name → provenance of every shipped loss."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(ZOO_DIR.glob("*.json"))
            if (ZOO_DIR / f"{p.stem}.pt").is_file()}  # fmt: skip


def path(name: str) -> Path:
    """The loss file of a zoo entry; an unknown name lists the known ones."""
    name = name.removeprefix(PREFIX)
    known = entries()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no loss {name!r} in the zoo.{hint} Known: {', '.join(known)}")
    return ZOO_DIR / f"{name}.pt"
