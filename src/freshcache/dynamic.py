"""Values whose dependencies are known only after computing them.

``@cached_as()`` without samples and the declarative caches store, with the value, the list of
stamp keys their computation read and the tokens it saw; a reader fetches the value, then the
current tokens of those keys (or both at once when it can guess the keys), and serves the value
only if they all match. This is the stamp protocol of :mod:`freshcache.store` with the key list
carried in the payload instead of derived from a query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from freshcache.conf import settings
from freshcache.exceptions import BackendError

__all__ = ["REGISTRY_SEP", "DynamicValues"]

logger = logging.getLogger("freshcache")

#: Registries read ``@<epoch>;<scheme>;...``: the epoch, before the first separator, is what a
#: value stores as the registry's token.
REGISTRY_SEP = b";"


class DynamicValues:
    """The dynamic-value half of :class:`~freshcache.store.Store` (which provides ``backend``,
    the failure handling ``_failed``/``_recover`` and the failover screen ``_screen``)."""

    _missed: set[str]
    _down: bool
    backend: Any
    _recover: Callable[[], bool]
    _failed: Callable[..., None]
    _screen: Callable[[Any], Any]

    def lookup_dynamic(self, key: str) -> tuple[bytes, list[str], list[bytes]] | None:
        """A value stored with its own list of keys: two round trips (value, then its stamps).

        Returns the data with the keys and tokens it was validated against (an enclosing
        capture depends on them too), or None.
        """
        if (self._missed or self._down) and not self._recover():
            return None
        try:
            (raw,) = self.backend.get_many((key,))
            if raw is None:
                return None
            keys, tokens, data = msgpack.unpackb(raw, use_list=True)
            screened = self._screen(self.backend.get_many(keys) if keys else [])
        except BackendError as exc:
            self._failed(exc)
            return None
        except Exception:
            logger.warning("freshcache: undecodable payload at %s treated as a miss", key)
            return None
        if screened is None:
            return None
        current = screened[0]
        if len(current) != len(tokens) or not keys:
            return None
        for value, token in zip(current, tokens, strict=True):
            if value is None:
                return None
            if value.startswith(b"@"):  # a registry: its epoch is the token
                value = value.split(REGISTRY_SEP, 1)[0]
            if value != token:
                return None
        return data, keys, tokens

    def save_dynamic(
        self, key: str, keys: Sequence[str], tokens: Sequence[bytes], data: bytes, ttl: int
    ) -> bool:
        payload = msgpack.packb([list(keys), list(tokens), data], use_bin_type=True)
        if len(payload) > settings.MAX_VALUE_SIZE:
            logger.debug("freshcache: %s not cached, %d bytes is over the limit", key, len(payload))
            return False
        try:
            self.backend.set_many({key: payload}, ttl, touch=keys)
        except BackendError as exc:
            self._failed(exc)
            return False
        return True

    def lookup_dynamic_many(
        self, keys: Sequence[str], also: Sequence[str] = ()
    ) -> list[tuple[bytes, list[str], list[bytes], frozenset[str]] | None]:
        """Values stored by :meth:`save_dynamic`: ``(data, keys, tokens, stale)`` or None each.

        ``stale`` names the stamp keys that changed or are gone since the value was stored: the
        value is valid iff it is empty (a stale one is returned for callers that may serve it
        for a bounded time). One round trip reads the values together with ``also``, the stamp
        keys the caller expects them to carry (remembered from an earlier read); a second one
        reads only the stamp keys that were not among them.
        """
        found: list[tuple[bytes, list[str], list[bytes], frozenset[str]] | None] = [None] * len(
            keys
        )
        if not keys or ((self._missed or self._down) and not self._recover()):
            return found
        wanted = set(keys)
        extra = [k for k in dict.fromkeys(also) if k not in wanted]
        try:
            values = self.backend.get_many([*keys, *extra])
            screened = self._screen(values[len(keys) :])
        except BackendError as exc:
            self._failed(exc)
            return found
        if screened is None:
            return found
        current = dict(zip(extra, screened[0], strict=True))
        stored: list[tuple[list[str], list[bytes], bytes] | None] = []
        for key, raw in zip(keys, values[: len(keys)], strict=True):
            item = None
            if raw is not None:
                try:
                    item = msgpack.unpackb(raw, use_list=True)
                    if len(item) != 3 or len(item[0]) != len(item[1]) or not item[0]:
                        item = None
                except Exception:
                    logger.warning("freshcache: undecodable payload at %s treated as a miss", key)
                    item = None
            stored.append(item)
        missing = list(dict.fromkeys(k for s in stored if s for k in s[0] if k not in current))
        if missing:
            try:
                screened = self._screen(self.backend.get_many(missing))
            except BackendError as exc:
                self._failed(exc)
                return found
            if screened is None:
                return found
            current.update(zip(missing, screened[0], strict=True))
        for i, item in enumerate(stored):
            if item is None:
                continue
            stamp_keys, tokens, data = item
            stale = set()
            for key, token in zip(stamp_keys, tokens, strict=True):
                value = current[key]
                if value is not None and value.startswith(b"@"):  # a registry: its epoch
                    value = value.split(REGISTRY_SEP, 1)[0]
                if value != token:
                    stale.add(key)
            found[i] = (data, stamp_keys, tokens, frozenset(stale))
        return found
