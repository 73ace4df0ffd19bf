"""The dog-pile lock: one caller recomputes a missing value while the others wait for it.

The lock half of :class:`~freshcache.store.Store` (which provides ``backend`` and the failure
handling ``_failed``). A lock is a key next to the value's, holding its holder's random token;
waiting blocks on the backend until the holder releases, its lock expires (a crashed holder) or
the timeout passes. A backend failure is never an error here: the caller computes the value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from freshcache.exceptions import BackendError
from freshcache.stamps import new_token

__all__ = ["DogPileLocks", "lock_key"]


def lock_key(key: str) -> str:
    """The lock of a value key; the braces make it and its signal share a cluster slot."""
    return f"{key}:lock{{{key.rsplit(':', 1)[-1]}}}"


class DogPileLocks:
    backend: Any
    _failed: Callable[..., None]

    def lock_or_wait(self, key: str, timeout: float) -> bytes | None:
        """Become the one that computes ``key`` (returns the lock token to release), or wait
        for whoever is (returns None: look the value up again, compute if still missing).

        Waiting blocks on the backend and ends when the holder releases, when its lock
        expires (a crashed holder), or after ``timeout`` seconds, whichever comes first.
        """
        lock = lock_key(key)
        token = new_token()
        try:
            acquired, holder, left = self.backend.lock_acquire(lock, token, int(timeout * 1000))
            if acquired or holder is None:
                return token if acquired else None
            self.backend.lock_wait(lock, holder, min(timeout, left / 1000))
        except BackendError as exc:
            self._failed(exc)
        return None

    def unlock(self, key: str, token: bytes) -> None:
        try:
            self.backend.lock_release(lock_key(key), token)
        except BackendError as exc:
            self._failed(exc)

    def try_lock(self, key: str, timeout: float) -> bytes | None:
        """Take the dog-pile lock of ``key`` without waiting: the token to release, or None
        when another caller holds it (or the backend failed)."""
        token = new_token()
        try:
            acquired, _, _ = self.backend.lock_acquire(lock_key(key), token, int(timeout * 1000))
        except BackendError as exc:
            self._failed(exc)
            return None
        return token if acquired else None
