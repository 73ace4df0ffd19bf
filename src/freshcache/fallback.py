"""Values computed by a fallback and stored with the stamps of what it read.

The engine of the declarative caches (:mod:`freshcache.declarative`) and of ``CachedManager``
(:mod:`freshcache.managers`). A value is looked up by key; on a miss the fallback runs inside a
capture (:mod:`freshcache.capture`), exactly like ``@cached_as()`` with no samples, so the value
carries the stamps of everything it read and any write that could change it makes it invalid.
Nothing here invalidates by hand.

Every value also depends on two more keys, read before the fallback runs: the global epoch
(``invalidate_all``) and the model's *version* key, which :func:`bump_version` deletes after a
deploy that changes the model's fields.

Reads: :meth:`Store.lookup_dynamic_many` reads the values together with the stamp keys this
process saw them carry last time (:data:`hints`), so a warm read of any number of values is one
round trip; a cold one is two. Options per value (:class:`Spec`): the dog-pile ``lock``;
``allowtime``, which serves a value younger than that many seconds even though a stamp changed,
while one caller (holding the lock) recomputes it; ``invalidation=False``, which stores a value
with the global and version keys only, so that it expires by time.
"""

from __future__ import annotations

import io
import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Model

from freshcache import capture
from freshcache import transaction as tx
from freshcache.conf import key_prefix, on_reset, profile_for, settings
from freshcache.exceptions import ImproperlyConfigured, SerializationError
from freshcache.serializers import dumps_signed, loads_signed
from freshcache.signals import cache_read
from freshcache.store import Plan, store

__all__ = [
    "MISS",
    "Absent",
    "Found",
    "Spec",
    "bump_version",
    "default_timeout",
    "fetch",
    "hints",
    "run",
    "served",
    "version_key",
]

logger = logging.getLogger("freshcache")
_now = time.time  # the clock of ``allowtime``; a module attribute so tests can move it
MISS: Any = object()
_UNSET: Any = object()
Found = tuple[bytes, list[str], list[bytes], frozenset[str]]


class Absent:
    """Stored when the fallback raised the model's ``DoesNotExist``: absence is cached too."""

    __slots__ = ()


# -- versions ---------------------------------------------------------------------------------


def version_key(prefix: str, model: type[Model]) -> str:
    """The key every declarative value of ``model`` depends on; deleting it is a bump."""
    return f"{prefix}mv:{model._meta.concrete_model._meta.label_lower}"


def bump_version(model: type[Model], using: str | None = None) -> None:
    """Invalidate every declarative value of ``model`` (``InstanceCache``, ``QuerysetCache``,
    ``Model.cache``, ``CachedManager``), for all databases unless ``using`` names one.

    Run it after a deploy that adds, removes or changes the model's fields, so that no instance
    pickled with the old fields is served. ``manage.py bump_version app.Model`` does the same.
    """
    aliases = [using] if using else list(connections)
    store.delete(sorted({version_key(key_prefix(alias), model) for alias in aliases}))


# -- the engine: one value, its key and the rules it is cached by ---------------------------


@dataclass(frozen=True)
class Spec:
    """How one value is cached: its key and the options of the class (or manager) it is for."""

    key: str
    model: type[Model]
    db: str
    timeout: int
    lock: bool = False
    allowtime: float | None = None
    invalidation: bool = True
    owner: Any = None  # what ``cache_read`` reports as ``func``

    @property
    def hard_keys(self) -> tuple[str, str]:
        """The global epoch and the model's version: a stale value is never served past them."""
        prefix = key_prefix(self.db)
        return f"{prefix}g", version_key(prefix, self.model)


class _Hints:
    """Which stamp keys each value carried when this process last saw it (bounded LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._data: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys: Sequence[str]) -> list[str]:
        with self._lock:
            return [k for key in keys for k in self._data.get(key, ())]

    def put(self, key: str, stamps: Sequence[str]) -> None:
        with self._lock:
            self._data[key] = tuple(stamps)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


hints = _Hints()
on_reset(hints.clear)


def default_timeout(model: type[Model], owner: str) -> int:
    """The model's profile timeout, else ``FRESHCACHE_DEFAULTS['timeout']``."""
    profile = profile_for(model)
    if profile is not None and profile.timeout:
        return int(profile.timeout)
    defaults = settings.DEFAULTS if isinstance(settings.DEFAULTS, Mapping) else {}
    if defaults.get("timeout"):
        return int(defaults["timeout"])
    raise ImproperlyConfigured(
        f"{owner}: no timeout. Set timeout = <seconds> on it, give {model._meta.label} a "
        "profile with a timeout, or set FRESHCACHE_DEFAULTS = {'timeout': 3600}."
    )


def _bypassed(spec: Spec) -> bool:
    """Caching off, or uncommitted writes on the connection the value is read from."""
    return not settings.ENABLED or tx.is_dirty(connections[spec.db])


def fetch(specs: Sequence[Spec]) -> list[Found | None]:
    """What the backend holds for each spec, valid or stale: one round trip when warm."""
    found: list[Found | None] = [None] * len(specs)
    wanted = [i for i, spec in enumerate(specs) if not _bypassed(spec)]
    if wanted:
        keys = [specs[i].key for i in wanted]
        for i, item in zip(wanted, store.lookup_dynamic_many(keys, hints.get(keys)), strict=True):
            found[i] = item
    return found


def _decode(found: Found) -> tuple[float, Any] | Any:
    try:
        computed_at, value = loads_signed(found[0])
    except Exception as exc:  # a payload we cannot verify or read is a miss
        logger.warning("freshcache: declarative payload rejected (%s), recomputing", exc)
        return MISS
    return computed_at, value


def _serve(spec: Spec, found: Found, value: Any) -> Any:
    hints.put(spec.key, found[1])
    if capture.active() and not spec.invalidation:
        # The value's stamps do not say what it read: an enclosing value would outlive it.
        capture.poison("a value with invalidation = False was read")
    elif capture.active():  # an enclosing computation depends on what this value read
        capture.record(found[1], found[2])
    cache_read.send(sender=spec.model, func=spec.owner, hit=True)
    return value


def served(spec: Spec, found: Found | None) -> Any:
    """The value of a valid hit, or ``MISS``."""
    if found is None or found[3]:
        return MISS
    decoded = _decode(found)
    return MISS if decoded is MISS else _serve(spec, found, decoded[1])


def run(spec: Spec, compute: Callable[[], Any], found: Found | None = _UNSET) -> Any:
    """The cached value of ``spec``, else ``compute()`` stored with the stamps of what it read.

    ``found`` is what :func:`fetch` already read for it (a batch), if anything.
    """
    if _bypassed(spec):
        return compute()
    if found is _UNSET:
        (found,) = fetch([spec])
    value = served(spec, found)
    if value is not MISS:
        return value
    if found is not None and spec.allowtime and not found[3] & set(spec.hard_keys):
        decoded = _decode(found)
        if decoded is not MISS and _now() - decoded[0] < spec.allowtime:
            token = store.try_lock(spec.key, settings.LOCK_TIMEOUT)
            if token is None:  # another caller is recomputing it: serve the young stale value
                return _serve(spec, found, decoded[1])
            try:
                return _compute_and_store(spec, compute)
            finally:
                store.unlock(spec.key, token)
    token = None
    if spec.lock:
        token = store.lock_or_wait(spec.key, settings.LOCK_TIMEOUT)
        # Waited for whoever held the lock, or took it just after they released it: either
        # way they may have stored the value meanwhile.
        value = served(spec, fetch([spec])[0])
        if value is not MISS:
            if token is not None:
                store.unlock(spec.key, token)
            return value
    try:
        return _compute_and_store(spec, compute)
    finally:
        if token is not None:
            store.unlock(spec.key, token)


def _compute_and_store(spec: Spec, compute: Callable[[], Any]) -> Any:
    hard = Plan(keys=spec.hard_keys, registries=(), schemes=(), tables=())
    data: bytes | SerializationError
    if spec.invalidation:
        with capture.capturing() as recorded:
            tokens = store.read_stamps(hard, spec.timeout)  # before the database, as always
            if tokens is None:
                capture.poison("the backend could not be read")
            else:
                capture.record(hard.keys, tokens)
            value = compute()
            # Pickled inside the capture: a lazy queryset nested in the value (a dict of
            # them) runs its query now, and that read's stamps must be the value's too.
            data = _dumped(value)
        cache_read.send(sender=spec.model, func=spec.owner, hit=False)
        if recorded.poisoned:
            logger.debug("freshcache: %s not cached: %s", spec.owner, recorded.poisoned)
            return value
        keys = list(recorded.tokens)
        tokens = [recorded.tokens[k] for k in keys]
    else:  # time-only expiry: only invalidate_all and bump_version reach it
        tokens = store.read_stamps(hard, spec.timeout)
        value = compute()
        data = _dumped(value)
        cache_read.send(sender=spec.model, func=spec.owner, hit=False)
        if tokens is None or not tx.can_store(connections[spec.db]):
            return value
        keys = list(hard.keys)
    if isinstance(data, SerializationError):
        logger.debug("freshcache: %s not cached: %s", spec.owner, data)
        return value
    if store.save_dynamic(spec.key, keys, tokens, data, spec.timeout):
        hints.put(spec.key, keys)
    return value


def _dumped(value: Any) -> bytes | SerializationError:
    try:
        return dumps_signed((_now(), value), dump=_dumps_detached)
    except SerializationError as exc:
        return exc


class _DetachingPickler(pickle.Pickler):
    """Pickles model instances, wherever they are in the value (any container, any object),
    without the related objects and prefetches attached to them: those may come from outside
    the computation (``user.avatars.get()`` attaches the caller's ``user``), so their changes
    would not reach the stored value. They load again when accessed."""

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, Model):
            return NotImplemented
        reduced = obj.__reduce__()  # the state is a copy (Model.__getstate__)
        if len(reduced) != 3 or not isinstance(reduced[2], dict):
            return NotImplemented  # a model with a reduction of its own: as it is
        state = reduced[2]
        state.pop("_prefetched_objects_cache", None)
        if "_state" in state:
            state["_state"].fields_cache = {}
        return reduced


def _dumps_detached(value: Any) -> bytes:
    buffer = io.BytesIO()
    _DetachingPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()
