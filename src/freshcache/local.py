"""``local_get``: simple ``.get()`` results kept in process memory, invalidated everywhere.

The seed's peer never invalidates these. Here every entry remembers the stamp keys its rows were
validated against; an invalidation drops the entries depending on any key it deleted, at once in
the process that wrote and, through a pub/sub channel on the backend, in every other process
within the channel's delivery delay (milliseconds on a healthy Redis). While the channel is not
known to be connected (startup, a dropped connection, a fork) nothing is served from memory, and
a reconnect clears everything, so a missed message can never leave a stale entry behind.

A fill races an invalidation only if the invalidation arrives between the backend read and the
insert; a sequence number taken before the read makes the insert give up in that case.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

from freshcache.conf import on_reset, settings

__all__ = ["CHANNEL", "LocalGets", "local_gets"]

logger = logging.getLogger("freshcache")

#: The pub/sub channel that carries deleted keys. One name whatever the key prefixes: a process
#: receiving keys of another prefix only drops entries it does not have.
CHANNEL = "freshcache:invalidations"


class LocalGets:
    """A bounded LRU of rows with an index from stamp key to the entries that depend on it."""

    def __init__(self, max_entries: int | None = None) -> None:
        # The listener thread is started on first use, not at import.
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Any, frozenset[str]]] = OrderedDict()
        self._index: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.seq = 0
        self._listening = False
        self._listener: threading.Thread | None = None
        self._pid = os.getpid()
        self.origin = os.urandom(8)  # our own messages need no second pass
        self._stop = threading.Event()

    # -- entries -----------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The rows for ``key`` or None; None too whenever invalidations might be missed."""
        if not self._ready():
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, rows: Any, deps: Sequence[str], seq: int) -> None:
        """Keep ``rows`` unless an invalidation arrived since ``seq`` was taken."""
        if not self._ready():
            return
        with self._lock:
            if seq != self.seq:
                return
            self._drop(key)
            keys = frozenset(deps)
            self._entries[key] = (rows, keys)
            for dep in keys:
                self._index.setdefault(dep, set()).add(key)
            limit = self.max_entries or int(settings.LOCAL_GET_MAX_ENTRIES)
            while len(self._entries) > limit:
                self._drop(next(iter(self._entries)))

    def invalidate(self, keys: Iterable[str]) -> None:
        with self._lock:
            self.seq += 1
            for dep in keys:
                for key in self._index.pop(dep, ()):
                    self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self.seq += 1
            self._entries.clear()
            self._index.clear()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for dep in entry[1]:
            dependents = self._index.get(dep)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._index[dep]

    # -- the channel ---------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether entries may be used: the backend needs no channel (one process), or ours is
        subscribed. Starts the listener on first use, and again in a forked child."""
        from freshcache.backends import get_backend
        from freshcache.exceptions import BackendError

        backend = get_backend()
        try:
            client = getattr(backend, "client", None)
        except BackendError:
            return False  # a client made on first use (cluster) could not connect yet
        if client is None:
            return True  # in-process backend: every invalidation happens in this process
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.origin = os.urandom(8)
            self._listener = None
            self._listening = False
            self.clear()
        if self._listener is None or not self._listener.is_alive():
            self._start(client)
        return self._listening

    def _start(self, client: Any) -> None:
        self._stop.clear()
        self._listener = threading.Thread(
            target=self._listen, args=(client, CHANNEL), name="freshcache-local-get", daemon=True
        )
        self._listener.start()

    def _listen(self, client: Any, channel: str) -> None:
        while not self._stop.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.clear()  # whatever happened while we were not listening
                        self._listening = True
                    elif message["type"] == "message":
                        origin, keys = msgpack.unpackb(message["data"])
                        if origin != self.origin:
                            self.invalidate(keys)
            except Exception as exc:  # a dropped connection: stop serving, retry
                logger.warning("freshcache local_get channel lost (%s); serving from Redis", exc)
            finally:
                self._listening = False
                self.clear()
                with contextlib.suppress(Exception):
                    pubsub.close()
            self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop listening (tests, shutdown); entries are no longer served."""
        self._stop.set()
        self._listening = False
        self.clear()


local_gets = LocalGets()


@on_reset
def _reset() -> None:
    """Settings changed (another backend, other profiles): start over."""
    local_gets.stop()


def in_use() -> bool:
    """Whether any profile asks for ``local_get`` (writers then publish what they delete)."""
    defaults = settings.DEFAULTS if isinstance(settings.DEFAULTS, dict) else {}
    profiles = settings.PROFILES if isinstance(settings.PROFILES, dict) else {}
    return bool(defaults.get("local_get")) or any(
        isinstance(p, dict) and p.get("local_get") for p in profiles.values()
    )


def publish(backend: Any, keys: Sequence[str]) -> None:
    """Tell this process at once, and every other one through the channel, which stamp keys
    were deleted. Raises BackendError: the caller treats it as a failed invalidation."""
    local_gets.invalidate(keys)
    if keys and in_use():
        backend.publish(CHANNEL, msgpack.packb([local_gets.origin, list(keys)]))
