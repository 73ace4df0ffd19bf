"""Recording what a computation reads: the dependencies of ``@cached_as()`` with no samples.

While a capture is active, every ORM read (served from the cache or not) records the stamp keys
of what it read and the tokens it saw *before* it reached the database; the computed value is
then stored with all of them, exactly as a query's rows are. A read whose dependencies cannot
be known (raw SQL, an uncacheable query, a read on a connection with uncommitted writes, a
backend failure) poisons the capture: the value is returned but not stored.

Captures nest: a read records into every active capture, so an outer cached function depends on
what its inner cached functions and queries read, whether they were hits or misses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Capture", "active", "capturing", "orm_read", "poison", "record"]


class Capture:
    """Keys read and the token each had; ``poisoned`` says why the result must not be stored."""

    __slots__ = ("poisoned", "tokens")

    def __init__(self) -> None:
        self.tokens: dict[str, bytes] = {}
        self.poisoned: str | None = None

    def add(self, keys: Sequence[str], tokens: Sequence[bytes]) -> None:
        for key, token in zip(keys, tokens, strict=True):
            seen = self.tokens.setdefault(key, token)
            if seen != token:
                # A stamp changed between two reads of the same computation: already stale.
                self.poisoned = self.poisoned or "a dependency changed while computing"

    def poison(self, reason: str) -> None:
        self.poisoned = self.poisoned or reason


_active: ContextVar[tuple[Capture, ...]] = ContextVar("freshcache_captures", default=())
#: True while the ORM read path runs a statement, so that SQL executed any other way (a raw
#: cursor read) can be told apart and poison the captures.
orm_read: ContextVar[bool] = ContextVar("freshcache_orm_read", default=False)


def active() -> tuple[Capture, ...]:
    return _active.get()


@contextmanager
def capturing() -> Iterator[Capture]:
    """Record every read made inside the block (and inside nested captures)."""
    capture = Capture()
    token = _active.set((*_active.get(), capture))
    try:
        yield capture
    finally:
        _active.reset(token)


def record(keys: Sequence[str], tokens: Sequence[bytes]) -> None:
    for capture in _active.get():
        capture.add(keys, tokens)


def poison(reason: str) -> None:
    for capture in _active.get():
        capture.poison(reason)
