"""Bounded, process-local memos of pure results (names resolved, statements rewritten, keys).

Their keys can come from user input (field names, lookup values), so each memo holds a fixed
number of entries and starts over when full: on the read path, recomputing an entry now and then
costs less than keeping track of recency on every hit. Every memo also starts over when a
``FRESHCACHE_*`` setting changes, since prefixes, profiles and codecs feed what is remembered.
"""

from __future__ import annotations

from typing import TypeVar

from freshcache.conf import on_reset

__all__ = ["Memo"]

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict of at most ``limit`` entries, cleared when full and on a settings change.

    Single dict operations are atomic, so threads share a memo without a lock: a race can only
    lose an entry, which is computed again.
    """

    def __init__(self, limit: int = 4096) -> None:
        super().__init__()
        self.limit = limit
        on_reset(self.clear)

    def put(self, key: K, value: V) -> V:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
