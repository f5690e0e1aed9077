"""Which of K inner loops still train: an inner loop whose physics, loss or parameters turn
non-finite is stopped alone, with the reason it reports, while its batch-mates go on."""

from __future__ import annotations

from collections.abc import Sequence


class Alive:
    """The live inner loops of a batch and why the others stopped.

    Attributes:
        failed: Per inner loop, None while it trains, else why it was stopped.
        indices: The live inner loops, in order.
    """

    def __init__(self, k: int) -> None:
        self.failed: list[str | None] = [None] * k
        self.indices = list(range(k))

    def stop(self, bad: Sequence[bool], why: str) -> None:
        """Stops every live inner loop i with ``bad[i]``, recording ``why``."""
        for i in [i for i in self.indices if bad[i]]:
            self.failed[i] = why
            self.indices.remove(i)

    def mask(self) -> list[bool]:
        """Per inner loop, whether it still trains."""
        return [f is None for f in self.failed]
