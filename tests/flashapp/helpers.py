"""Test helpers for the declarative caches: counting backend calls and fallback runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from freshcache.backends import get_backend

METHODS = ("get_many", "set_many", "prepare", "delete_and_get", "lock_acquire")


@contextmanager
def backend_calls() -> Iterator[Counter[str]]:
    """Count the round trips the real backend serves inside the block, per method."""
    backend = get_backend()
    counts: Counter[str] = Counter()
    originals = {name: getattr(backend, name) for name in METHODS}

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return method(*args, **kwargs)

        return wrapper

    for name, method in originals.items():
        setattr(backend, name, counting(name, method))
    try:
        yield counts
    finally:
        for name in originals:
            delattr(backend, name)  # the instance attribute: the class method shows again


class Calls:
    """Counts how often a fallback really ran."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1
