"""Where the outer loop's inner loops run: anything with ``map`` (``epgkit.run.cluster`` gives
the Dask one); ``Serial`` runs them here, one after another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Executor(Protocol):
    """Runs a function over items and returns the results in order."""

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]: ...


class Serial:
    """Runs tasks one after another in this process."""

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        results = []
        for i, item in enumerate(items):
            results.append(fn(*item))
            if on_done is not None:
                on_done(i)
        return results
