"""An in-process engine with Redis' semantics: the embedded default and the test double.

It keeps TTLs, ``APPEND`` creating keys without a TTL, and ordered composite operations, so the
stamp protocol behaves exactly as on Redis within one process. It is bounded: past
``FRESHCACHE_LOCMEM_MAX_ENTRIES`` the least recently used keys go, which the protocol tolerates
like Redis eviction (an evicted stamp or registry only causes misses).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from freshcache.backends.base import Backend, Fill

__all__ = ["LocMemBackend"]

_stores: dict[str, tuple[OrderedDict[str, tuple[bytes, float | None]], threading.Lock]] = {}
_stores_lock = threading.Lock()
_conditions: dict[str, threading.Condition] = {}
#: How long a release signal stays readable for late waiters (seconds).
SIGNAL_TTL = 10.0


def _signal_key(key: str, token: bytes) -> str:
    return f"{key}:{token.decode()}"


class LocMemBackend(Backend):
    """A thread-safe ``key -> (value, expires_at)`` dict; same-``name`` instances share it."""

    name = "locmem"

    def __init__(self, name: str = "default", max_entries: int = 200_000) -> None:
        self.store_name = name
        self.max_entries = max_entries
        with _stores_lock:
            if name not in _stores:
                _stores[name] = (OrderedDict(), threading.Lock())
            self._data, self._lock = _stores[name]
            self._signalled = _conditions.setdefault(name, threading.Condition(self._lock))

    # All helpers below expect self._lock to be held.

    def _get(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def _set(self, key: str, value: bytes, expires: float | None) -> None:
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            return [self._get(key, now) for key in keys]

    def get_many_seeding(
        self, keys: Sequence[str], first: int, tokens: Sequence[bytes], ttl: int
    ) -> tuple[list[bytes | None], bool]:
        now = time.monotonic()
        expires = now + ttl
        with self._lock:
            values = [self._get(key, now) for key in keys]
            miss = values[0] is None
            for i in range(1, len(keys)):
                current = values[i]
                if current is not None:
                    old = self._data[keys[i]][1]
                    if miss and old is not None and old < expires:
                        self._data[keys[i]] = (current, expires)
                elif i >= first:
                    values[i] = tokens[i - first]
                    self._set(keys[i], tokens[i - first], expires)
            return values, True

    def set_many(
        self,
        mapping: Mapping[str, bytes],
        ttl: int,
        touch: Sequence[str] = (),
        wait: bool = True,
    ) -> None:
        now = time.monotonic()
        expires = now + ttl
        with self._lock:
            for key, value in mapping.items():
                self._set(key, value, expires)
            for key in touch:
                current = self._get(key, now)
                if current is not None:
                    old_expires = self._data[key][1]
                    if old_expires is not None and old_expires < expires:
                        self._data[key] = (current, expires)

    def prepare(
        self,
        nx: Mapping[str, bytes],
        appends: Sequence[tuple[str, bytes]],
        overwrite: Mapping[str, bytes],
        ttl: int,
        keys: Sequence[str],
    ) -> list[bytes | None]:
        now = time.monotonic()
        expires = now + ttl
        with self._lock:
            for key, value in nx.items():
                if self._get(key, now) is None:
                    self._set(key, value, expires)
            for key, value in appends:
                current = self._get(key, now)
                if current is None:
                    self._set(key, value, None)
                else:
                    self._set(key, current + value, self._data[key][1])
            for key, value in overwrite.items():
                self._set(key, value, expires)
            return [self._get(key, now) for key in keys]

    fills = True

    def delete_and_get(
        self, delete: Sequence[str], keys: Sequence[str], fills: Sequence[Fill] = ()
    ) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            held = [f for f in fills if self._holds(f, now)]
            for key in delete:
                self._data.pop(key, None)
            values = [self._get(key, now) for key in keys]
            for fill in held:
                self._set(fill.check[2], fill.token, now + fill.stamp_ttl)
                self._set(fill.key, fill.payload, now + fill.ttl)
                for key in fill.check[:2]:
                    item = self._data.get(key)
                    if item is not None and item[1] is not None and item[1] < now + fill.stamp_ttl:
                        self._set(key, item[0], now + fill.stamp_ttl)
            return values

    def _holds(self, fill: Fill, now: float) -> bool:
        """Whether ``fill``'s keys still hold the tokens it expects (under the lock)."""
        g, registry, stamp = (self._get(key, now) for key in fill.check)
        return (
            g == fill.expect[0]
            and stamp == fill.expect[2]
            and registry is not None
            and registry.split(b";", 1)[0] == fill.expect[1]
        )

    def lock_acquire(self, key: str, token: bytes, ttl_ms: int) -> tuple[bool, bytes | None, int]:
        now = time.monotonic()
        with self._lock:
            holder = self._get(key, now)
            if holder is None:
                self._set(key, token, now + ttl_ms / 1000)
                return True, token, ttl_ms
            expires = self._data[key][1]
            left = int(((expires or now) - now) * 1000)
            return False, holder, max(left, 0)

    def lock_wait(self, key: str, holder: bytes, timeout: float) -> bool:
        signal = _signal_key(key, holder)
        deadline = time.monotonic() + timeout
        with self._signalled:
            while True:
                now = time.monotonic()
                if self._get(signal, now) is not None:
                    return True
                if now >= deadline:
                    return False
                self._signalled.wait(deadline - now)

    def lock_release(self, key: str, token: bytes) -> None:
        now = time.monotonic()
        with self._signalled:
            if self._get(key, now) == token:
                del self._data[key]
            self._set(_signal_key(key, token), b"1", now + SIGNAL_TTL)
            self._signalled.notify_all()

    def ping(self) -> bool:
        return True

    def clear(self) -> None:
        """Forget everything (tests; the store never needs it)."""
        with self._lock:
            self._data.clear()

    def describe(self) -> str:
        return f"locmem:{self.store_name}"
