"""What the store does when its backend fails, or fails over to another primary.

With ``FRESHCACHE_DEGRADE_ON_FAILURE`` a failed call is a miss (reads go to the database) and a
failed invalidation is remembered, to be delivered before this process serves anything cached
again; a circuit breaker keeps an outage cheap by not trying the backend again until a retry
slot. Without it, the error is raised. A new primary (Sentinel failover, a cluster node
restart) may lack deletions the old one acknowledged, so a change of the backend's generation
drops what was read and delivers again what this process invalidated lately.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from freshcache.backends.base import Backend
from freshcache.conf import settings
from freshcache.exceptions import BackendError
from freshcache.local import local_gets, publish

__all__ = ["RETRY_INTERVAL", "BackendSkipped", "Resilience"]

logger = logging.getLogger("freshcache")

#: After a failure (with degrade), the backend is tried again after this many seconds.
RETRY_INTERVAL = 1.0
#: Separates a global epoch's token from the backend generation it was written under.
GEN_SEP = b"|"
#: How many recently invalidated registries a process remembers, to delete them again on a new
#: primary (the old one may have acknowledged the deletions without replicating them).
JOURNAL_SIZE = 10_000


class BackendSkipped(BackendError):
    """Not even tried: the circuit breaker holds calls back until the next retry slot."""


class Resilience:
    """The failure half of :class:`~freshcache.store.Store`."""

    _backend: Callable[[], Backend]
    _lock: threading.Lock
    _down: bool
    _retry_at: float
    _missed: set[str]
    _generation: bytes | None
    _journal: OrderedDict[str, None]

    @property
    def backend(self) -> Backend:
        """The backend; during an outage (with degrade) not even tried until the next retry
        slot, so that requests do not each wait for a connection timeout."""
        if self._down and time.monotonic() < self._retry_at and settings.DEGRADE_ON_FAILURE:
            raise BackendSkipped("the backend is unavailable; the next try is due shortly")
        return self._backend()

    # -- failure handling -------------------------------------------------------------------------

    def _failed(self, exc: BackendError, missed: Iterable[str] = ()) -> None:
        """Record a failed call; re-raise unless degrading."""
        with self._lock:
            self._missed.update(missed)
            first = not self._down
            self._down = True
            if not isinstance(exc, BackendSkipped):  # a refusal must not push the retry back
                # The first failure is tried again by the next call: a connection the server
                # closed (a failover, a restart) usually works again at once, and meanwhile
                # this process's invalidations would wait. Consecutive failures wait a slot.
                self._retry_at = time.monotonic() + (0.0 if first else RETRY_INTERVAL)
        if missed:
            # Invalidations this process could not deliver: its own memory entries may be among
            # what they would have dropped (local_get).
            local_gets.clear()
        if not settings.DEGRADE_ON_FAILURE:
            raise exc
        if first:
            logger.warning("freshcache backend unavailable, reading from the database: %s", exc)

    def healthy(self) -> bool:
        """No outage known and no invalidation owed."""
        return not self._down and not self._missed

    def _recover(self) -> bool:
        """Deliver remembered invalidations; True when cached values may be served again."""
        if not self._missed and not self._down:
            return True
        with self._lock:
            missed = list(self._missed)
        try:
            if missed:
                self.backend.delete_many(missed)
                publish(self.backend, missed)
            else:
                self.backend.ping()
        except BackendError as exc:
            self._failed(exc)
            return False
        with self._lock:
            self._missed.difference_update(missed)
            recovered = not self._missed
            if recovered and self._down:
                self._down = False
                logger.warning("freshcache backend answers again; cached reads resume")
        return recovered

    # -- a new primary (failover, restart) may lack deletions the old one acknowledged ---------

    def _screen(
        self, values: Sequence[bytes | None], global_first: bool = False
    ) -> tuple[list[bytes | None], bool] | None:
        """``values`` just read, as far as they may be trusted, and whether a global epoch of
        another generation was among them (it reads as missing, and is overwritten).

        None when the backend's generation changed since this process last looked: the read
        may come from a server that lacks recent deletions, so it is not used, and the keys
        this process invalidated lately are deleted again at once (or, if that fails, before
        anything is served). ``global_first``: ``values[0]`` is a plan's global epoch.
        """
        generation = self.backend.generation()
        if generation != self._generation:
            changed = self._generation is not None
            self._generation = generation
            if changed:
                logger.warning("freshcache: the backend's primary changed; cached values dropped")
                with self._lock:
                    self._missed.update(self._journal)
                local_gets.clear()
                self._recover()
                return None
        screened = list(values)
        if generation is None:
            return screened, False
        stale = False
        for i, value in enumerate(screened):
            if value is None or value.startswith(b"@"):
                continue  # missing, or a registry
            if GEN_SEP in value:
                foreign = value.rsplit(GEN_SEP, 1)[1] != generation
            else:
                foreign = global_first and i == 0  # written before generations were tracked
            if foreign:
                screened[i] = None
                stale = True
        return screened, stale

    def _journal_add(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._journal[key] = None
                self._journal.move_to_end(key)
            while len(self._journal) > JOURNAL_SIZE:
                self._journal.popitem(last=False)

    def remember(self, keys: Iterable[str]) -> None:
        """Keys to delete before the next cached read (writes made while caching was off)."""
        with self._lock:
            self._missed.update(keys)
