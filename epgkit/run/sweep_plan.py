"""What a sweep runs: grids of gin bindings (``--grid``), their points, and a checked plan.

Nothing here writes or parses gin (config files are only located): a plan is the command's
arguments checked, and its points are every combination of the grids (or a seeded random
sample of them).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from epgkit.run import config

# scope/Configurable.parameter, as gin names a binding (a bare name would define a macro).
BINDING_NAME = re.compile(r"(?:[A-Za-z_][\w.]*/)*[A-Za-z_][\w.]*\.[A-Za-z_]\w*")


@dataclass(frozen=True)
class Axis:
    """One ``--grid``: a gin binding and the values it takes."""

    binding: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a value per axis, its gin bindings and its folder name."""

    name: str
    values: tuple[Any, ...]
    bindings: tuple[str, ...]


def parse_axis(spec: str) -> Axis:
    """``'OpenES.sigma=[0.01, 0.02]'`` → an axis; values are Python literals (ast)."""
    name, sep, text = spec.partition("=")
    name = name.strip()
    example = "e.g. --grid 'OpenES.sigma=[0.01, 0.02]'"
    if not sep or not BINDING_NAME.fullmatch(name):
        raise config.ConfigError(
            f"--grid {spec!r}: give a configurable's parameter and a list of values, {example}"
        )
    try:
        values = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise config.ConfigError(
            f"--grid {spec!r}: {text.strip()!r} is not a list of Python literals, {example}"
        ) from None
    if not isinstance(values, list | tuple) or not values:
        raise config.ConfigError(f"--grid {spec!r}: the values must be a non-empty list, {example}")
    if len({repr(v) for v in values}) < len(values):
        raise config.ConfigError(f"--grid {spec!r}: a value is repeated")
    return Axis(name, tuple(values))


def _text(value: Any) -> str:
    """A value as a file-name fragment: letters, digits and ``. + - _`` only."""
    text = value if isinstance(value, str) else repr(value)
    return re.sub(r"[^\w.+-]+", "_", text).strip("_") or "_"


@dataclass(frozen=True)
class Plan:
    """A sweep: the configs and bindings shared by all points, the grid, and the sampling.

    Attributes:
        configs: Gin files, resolved to absolute paths.
        bindings: ``-b`` bindings shared by every point (before the point's own).
        axes: The grids; points are their Cartesian product, the last axis varying fastest.
        samples: Run only this many points drawn without replacement; None runs them all.
        seed: Seed of that draw.
    """

    configs: tuple[str, ...]
    bindings: tuple[str, ...]
    axes: tuple[Axis, ...]
    samples: int | None = None
    seed: int = 0

    def size(self) -> int:
        """Points of the full grid."""
        return math.prod(len(a.values) for a in self.axes)

    def points(self) -> list[Point]:
        """The points in grid order; names made unique if two sanitize alike."""
        if self.samples is None:
            combos = list(itertools.product(*(a.values for a in self.axes)))
        else:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed))
            picks = sorted(int(i) for i in rng.choice(self.size(), self.samples, replace=False))
            combos = [self._combo(i) for i in picks]
        names = [
            ",".join(
                f"{_text(a.binding)}={_text(v)}" for a, v in zip(self.axes, combo, strict=True)
            )
            for combo in combos
        ]
        points = []
        for i, (name, combo) in enumerate(zip(names, combos, strict=True)):
            if names.count(name) > 1:
                name = f"{name}~{i}"
            if len(name) > 200:  # file names are limited to 255 bytes
                digest = hashlib.sha1(name.encode()).hexdigest()[:8]
                name = f"{name[:190]}~{digest}"
            bindings = tuple(f"{a.binding} = {v!r}" for a, v in zip(self.axes, combo, strict=True))
            points.append(Point(name, combo, bindings))
        return points

    def _combo(self, index: int) -> tuple[Any, ...]:
        """The ``index``-th combination of the product, without listing the product."""
        values = []
        for axis in reversed(self.axes):
            index, digit = divmod(index, len(axis.values))
            values.append(axis.values[digit])
        return tuple(reversed(values))

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same sweep (recorded in sweep.json): each config file by
        its name and content, not its path, so that the same command finds its sweep again from
        another install or a moved checkout; the bindings as gin reads them, spaces aside."""
        return {
            "configs": [_file_identity(c) for c in self.configs],
            "bindings": [_spaced(b) for b in self.bindings],
            "grid": {a.binding: [repr(v) for v in a.values] for a in self.axes},
            "samples": self.samples,
            "seed": self.seed if self.samples is not None else None,
        }

    def name(self) -> str:
        """A short stable name from a hash of the identity: ``sweep-1a2b3c4d``."""
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()
        return f"sweep-{digest[:8]}"


def _file_identity(path: str) -> str:
    """``name sha256:…`` of a config file."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return f"{os.path.basename(path)} sha256:{digest[:16]}"


def _spaced(binding: str) -> str:
    """``a.b=1`` as ``a.b = 1``: one spelling of a binding whatever its spaces."""
    name, eq, value = binding.partition("=")
    if not eq or not BINDING_NAME.fullmatch(name.strip()):  # `include '…'`, `import …`
        return binding.strip()
    return f"{name.strip()} = {value.strip()}"


def plan(
    configs: Sequence[str],
    grids: Sequence[str],
    bindings: Sequence[str] = (),
    samples: int | None = None,
    seed: int = 0,
) -> Plan:
    """Checks the command's arguments and makes a plan (nothing is parsed by gin yet)."""
    if not configs:
        raise config.ConfigError("give at least one config file, e.g. gin/quickstart.gin")
    if not grids:
        raise config.ConfigError(
            "give at least one --grid, e.g. --grid 'OpenES.sigma=[0.01, 0.02]'"
        )
    axes = tuple(parse_axis(g) for g in grids)
    names = [a.binding for a in axes]
    for name in names:
        if names.count(name) > 1:
            raise config.ConfigError(f"--grid {name} is given twice; give it once with all values")
    bound = {b.partition("=")[0].strip() for b in bindings}
    both = [n for n in names if n in bound]
    if both:
        raise config.ConfigError(f"{both[0]} is both swept (--grid) and fixed (-b); keep one")
    full = math.prod(len(a.values) for a in axes)
    if samples is not None and not 1 <= samples <= full:
        raise config.ConfigError(
            f"--samples must be between 1 and the {full} points of the grid, got {samples}"
        )
    resolved = tuple(str(config.resolve(c).resolve()) for c in configs)
    return Plan(resolved, tuple(bindings), axes, samples, seed)
