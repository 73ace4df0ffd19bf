"""The mixed workload's bookkeeping, in memory shared by its processes.

Writers need a per-item lock and a global version counter; checked reads need, per item and per
category, what every write whose ``save()`` has returned left behind. This used to live in Redis
(three round trips per write) and in one more database query per write. Each of those cost CPU
on the two cores every library's processes share, and the faster the library, the larger the
share of that CPU in its operations: the ratios between libraries shrank towards 1. Shared memory
behind one semaphore costs a few microseconds and no server's time.
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from typing import Any

__all__ = ["Ledger", "category_of"]


def category_of(pk: int, categories: int) -> int:
    """The category the benchmark data puts item ``pk`` in."""
    return 1 + (pk - 1) % categories


class Ledger:
    """Locks, the version counter and the committed versions, for items ``1..rows``.

    Created once per library process and passed to every cell's processes, so versions keep
    growing from one cell to the next, as the database's do.
    """

    def __init__(self, ctx: BaseContext, rows: int, categories: int) -> None:
        self.categories = categories
        self._guard: Any = ctx.Lock()
        self._seq: Any = ctx.RawArray("q", 1)
        self._locked: Any = ctx.RawArray("b", rows + 1)
        self._version: Any = ctx.RawArray("q", rows + 1)
        # Per category: the sum of its items' recorded versions. Every recorded version is at
        # most the item's version in the database from then on (versions only grow), so this
        # sum bounds the category's sum from below, exactly as tightly as the records allow.
        self._catsum: Any = ctx.RawArray("q", categories + 1)

    def lock_and_draw(self, pk: int) -> int:
        """The item's lock and the next version; 0 when another process holds the lock."""
        with self._guard:
            if self._locked[pk]:
                return 0
            self._locked[pk] = 1
            self._seq[0] += 1
            return int(self._seq[0])

    def record_and_unlock(self, pk: int, version: int) -> None:
        """The write's ``save()`` has returned: its version is a floor for later reads."""
        with self._guard:
            previous = self._version[pk]
            if version > previous:
                self._version[pk] = version
                self._catsum[category_of(pk, self.categories)] += version - previous
            self._locked[pk] = 0

    def committed(self, kind: str, key: int) -> int:
        """A lower bound of the answer after every write whose ``save()`` has returned: the
        item's version, or (``kind == "category"``) the sum over category ``key``."""
        with self._guard:
            return int(self._catsum[key] if kind == "category" else self._version[key])
