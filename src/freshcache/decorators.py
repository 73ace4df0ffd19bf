"""``@cached_as`` and ``@cached_view_as``: functions and views cached the way querysets are.

A result is stored with the stamps of its samples (querysets, models, instances), or, with no
samples, with the stamps of everything the function read while computing it (see
:mod:`freshcache.capture`): either way it is served only while all of them are unchanged.
Results are pickled and signed (:mod:`freshcache.serializers`); one that cannot be pickled is
returned uncached. The key covers the function's module and qualified name, its arguments and
``extra``; arguments without a stable text form make the call uncached, never ambiguous.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from freshcache import capture
from freshcache import transaction as tx
from freshcache.conf import key_prefix, profile_for, settings
from freshcache.dependencies import (
    Deps,
    instance_dependencies,
    merge,
    model_dependencies,
    query_dependencies,
)
from freshcache.exceptions import ImproperlyConfigured, SerializationError, UncacheableQuery
from freshcache.keys import call_key, func_name
from freshcache.serializers import dumps_signed, loads_signed
from freshcache.signals import cache_read
from freshcache.store import Plan, store
from freshcache.views import cacheable_response, request_key, view_extra, view_wrapper

__all__ = ["cached_as", "cached_view_as"]

logger = logging.getLogger("freshcache")
F = TypeVar("F", bound=Callable[..., Any])
_MISS = object()
_SKIP = object()  # a call that must not be stored


def sample_dependencies(samples: tuple[Any, ...]) -> Deps:
    """Dependencies of ``cached_as`` samples: querysets, model classes, instances."""
    parts: list[Deps] = []
    for sample in samples:
        if isinstance(sample, QuerySet):
            parts.append(query_dependencies(sample.query, max_in=settings.MAX_IN, using=sample.db))
        elif isinstance(sample, type) and issubclass(sample, Model):
            parts.append(model_dependencies(sample))
        elif isinstance(sample, Model):
            parts.append(instance_dependencies(sample))
        else:
            raise TypeError(
                f"cached_as() samples are querysets, models or instances, not {sample!r}"
            )
    return merge(*parts)


def _sample_models(samples: tuple[Any, ...]) -> list[type[Model]]:
    models = []
    for sample in samples:
        if isinstance(sample, QuerySet):
            models.append(sample.model)
        elif isinstance(sample, type) and issubclass(sample, Model):
            models.append(sample)
        elif isinstance(sample, Model):
            models.append(type(sample))
    return models


class _Cached:
    """What a ``cached_as`` wrapper knows; the sync and async wrappers share it."""

    def __init__(
        self,
        func: Callable[..., Any],
        samples: tuple[Any, ...],
        timeout: int | None,
        extra: Any,
        key_func: Callable[..., Any] | None,
        kind: str,
    ) -> None:
        self.func = func
        self.samples = samples
        self.timeout = timeout
        self.extra = extra
        self.key_func = key_func
        self.kind = kind
        self.name = func_name(func)
        for sample in samples:  # fail at decoration time on a wrong sample, not on a call
            if not isinstance(sample, (QuerySet, Model)) and not (
                isinstance(sample, type) and issubclass(sample, Model)
            ):
                raise TypeError(
                    f"cached_as() samples are querysets, models or instances, not {sample!r}"
                )

    def wants_lock(self, lock: bool | None) -> bool:
        """Explicit ``lock=``, else whether any sample's profile asks for the dog-pile lock."""
        if lock is not None:
            return lock
        return any(
            p is not None and p.lock for p in (profile_for(m) for m in _sample_models(self.samples))
        )

    def resolve_timeout(self) -> int:
        if self.timeout is not None:
            return self.timeout  # 0: computed every time, never stored
        timeouts = [
            p.timeout
            for p in (profile_for(m) for m in _sample_models(self.samples))
            if p is not None and p.timeout
        ]
        if timeouts:
            return min(timeouts)
        default = settings.DEFAULTS.get("timeout") if isinstance(settings.DEFAULTS, dict) else None
        if default:
            return int(default)
        raise ImproperlyConfigured(
            f"{self.name}: no timeout. Pass cached_as(..., timeout=seconds), give the samples' "
            "models a profile with a timeout, or set FRESHCACHE_DEFAULTS = {'timeout': ...}."
        )

    def key_parts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        extra = self.extra(*args, **kwargs) if callable(self.extra) else self.extra
        if self.key_func is not None:
            # As in cacheops: key_func(func, args, kwargs, extra) -> a string
            return (str(self.key_func(self.func, args, kwargs, extra)),)
        return (args, kwargs, extra)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return call_key(key_prefix("default"), self.kind, self.name, self.key_parts(args, kwargs))

    def try_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        try:
            return self.key(*args, **kwargs)
        except TypeError as exc:
            logger.debug("freshcache: %s not cached: %s", self.name, exc)
            return None

    def plan(self) -> Plan | None:
        if not self.samples:
            return None
        try:
            deps = sample_dependencies(self.samples)
        except UncacheableQuery as exc:
            logger.debug("freshcache: %s not cached, a sample is uncacheable: %s", self.name, exc)
            raise
        return Plan.build(deps, key_prefix(self.sample_db(), tuple(sorted(deps))))

    def sample_db(self) -> str:
        """The database the samples read (for a per-database ``FRESHCACHE_PREFIX``)."""
        for sample in self.samples:
            if isinstance(sample, QuerySet):
                return str(sample.db)
            if isinstance(sample, Model) and sample._state.db:
                return str(sample._state.db)
        return "default"

    # -- the two halves of a call, around the computation ----------------------------------------

    def fetch(self, key: str) -> Any:
        """The cached value or ``_MISS``; for samples, also the tokens to store a miss with."""
        try:
            plan = self.plan()
        except UncacheableQuery:
            capture.poison("a sample's dependencies cannot be known")
            return _MISS, _SKIP
        if plan is None:
            found = store.lookup_dynamic(key)
            data = None
            if found is not None:
                data, keys, tokens = found
                if capture.active():  # an enclosing computation depends on what this one read
                    capture.record(keys, tokens)
            state: Any = None
        else:
            probe = store.lookup(key, plan)
            data = probe.data if probe is not None else None
            state = (plan, probe)
        if data is not None:
            try:
                value = loads_signed(data)
            except Exception as exc:
                logger.warning("freshcache: payload at %s rejected (%s)", key, exc)
            else:
                if plan is not None and capture.active():
                    capture.record(plan.keys, store.tokens_of(state[1]) or [])
                cache_read.send(sender=None, func=self.func, hit=True)
                return value, None
        if plan is not None:
            probe = state[1]
            ready: list[bytes] | None = None
            if probe is not None:
                ready = store.prepare(probe, self.resolve_timeout())
            if capture.active():
                if ready is None:
                    capture.poison("the stamps of a sample could not be read")
                else:
                    capture.record(plan.keys, ready)
            return _MISS, (plan, ready)
        return _MISS, None

    def pickle(self, value: Any) -> bytes | None:
        try:
            return dumps_signed(value)
        except SerializationError as exc:
            logger.debug("freshcache: %s not cached: %s", self.name, exc)
            return None

    def store(
        self, key: str, data: bytes | None, state: Any, recorded: capture.Capture | None
    ) -> None:
        """Store pickled ``data`` (None: not storable) with the tokens of ``state``/``recorded``."""
        cache_read.send(sender=None, func=self.func, hit=False)
        if state is _SKIP or data is None:
            return
        timeout = self.resolve_timeout()
        if not timeout:
            return
        if state is not None:
            plan, tokens = state
            if tokens is not None:
                store.save(key, tokens, data, timeout, plan)
            return
        if recorded is None or recorded.poisoned:
            if recorded is not None:
                logger.debug("freshcache: %s not cached: %s", self.name, recorded.poisoned)
            return
        keys = list(recorded.tokens)
        store.save_dynamic(key, keys, [recorded.tokens[k] for k in keys], data, timeout)


def any_dirty() -> bool:
    """Whether a connection of this thread has uncommitted writes: the function would see them,
    the cache would not, so it runs uncached (neither read nor stored) until the commit."""
    return any(tx.is_dirty(c) for c in connections.all(initialized_only=True))


def storable() -> bool:
    """Whether a result computed just now may be stored with the samples' stamps (read before
    it ran): not if the function wrote without committing (it may have read its own write, and
    a rollback would leave that cached), nor inside a snapshot older than those stamps."""
    return all(
        tx.can_store(c) and not tx.is_dirty(c)
        for c in connections.all(initialized_only=True)
        if c.connection is not None  # an unopened connection read nothing
    )


def _global_read() -> None:
    """Every captured value depends on the global epoch (``invalidate_all``), read first."""
    plan = Plan.build({}, key_prefix("default"))
    tokens = store.read_stamps(plan, 60)
    if tokens is None:
        capture.poison("the backend could not be read")
    else:
        capture.record(plan.keys, tokens)


def cached_as(
    *samples: Any,
    timeout: int | None = None,
    extra: Any = None,
    lock: bool | None = None,
    key_func: Callable[..., Any] | None = None,
    keep_fresh: bool = True,
) -> Callable[[F], F]:
    """Cache a function's result until one of ``samples`` changes.

    Samples are querysets, model classes (any row) or instances (that row), mixed freely. With
    no samples, the result depends on everything the function reads while computing it.
    ``extra`` (a value, or a callable receiving the call's arguments) goes into the key; so do
    the arguments themselves. The wrapper has ``.invalidate(*args, **kwargs)`` and
    ``.key(*args, **kwargs)``. ``lock=True`` makes concurrent misses wait for one computation.
    ``keep_fresh`` is accepted for django-cacheops' sake: a result computed while a sample
    changed is never stored, whatever it says.
    """
    return _decorator(samples, timeout, extra, key_func, "f", lock=lock)


def _decorator(
    samples: tuple[Any, ...],
    timeout: int | None,
    extra: Any,
    key_func: Callable[..., Any] | None,
    kind: str,
    accept: Callable[[Any, tuple[Any, ...]], bool] | None = None,
    call_parts: Callable[..., tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
    lock: bool | None = None,
) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        cached = _Cached(func, samples, timeout, extra, key_func, kind)

        def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
            if not settings.ENABLED or any_dirty():
                return None
            key_args, key_kwargs = call_parts(*args, **kwargs) if call_parts else (args, kwargs)
            return cached.try_key(key_args, key_kwargs)

        def finish(result: Any, args: tuple[Any, ...]) -> bytes | None:
            """Accept (a view renders here, reading inside the capture) and pickle the result:
            a lazy value evaluated while pickling is still recorded."""
            if accept is not None and not accept(result, args):
                return None
            return cached.pickle(result)

        def compute(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
            if samples:
                result = func(*args, **kwargs)
                if not storable():
                    return result, None, None
                return result, finish(result, args), None
            with capture.capturing() as recorded:
                _global_read()
                result = func(*args, **kwargs)
                data = finish(result, args)
            return result, data, recorded

        if inspect.iscoroutinefunction(func):

            def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
                # On the thread the ORM calls run on: its connections tell whether a
                # transaction there has written (the event loop's thread has none of its own).
                key = prepare(args, kwargs)
                if key is None:
                    return None, _MISS, None
                return (key, *cached.fetch(key))

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                key, value, state = await sync_to_async(start, thread_sensitive=True)(args, kwargs)
                if key is None:
                    return await func(*args, **kwargs)
                if value is not _MISS:
                    return value
                recorded = None
                if samples:
                    result = await func(*args, **kwargs)
                    data = await sync_to_async(finish, thread_sensitive=True)(result, args)
                else:
                    with capture.capturing() as recorded:
                        await sync_to_async(_global_read, thread_sensitive=True)()
                        result = await func(*args, **kwargs)
                        data = await sync_to_async(finish, thread_sensitive=True)(result, args)
                await sync_to_async(cached.store, thread_sensitive=True)(key, data, state, recorded)
                return result

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                key = prepare(args, kwargs)
                if key is None:
                    return func(*args, **kwargs)
                value, state = cached.fetch(key)
                if value is not _MISS:
                    return value
                token = None
                if cached.wants_lock(lock) and state is not _SKIP:
                    token = store.lock_or_wait(key, settings.LOCK_TIMEOUT)
                    if token is None:  # another process computed it meanwhile: look again
                        value, state = cached.fetch(key)
                        if value is not _MISS:
                            return value
                try:
                    result, data, recorded = compute(args, kwargs)
                    cached.store(key, data, state, recorded)
                finally:
                    if token is not None:
                        store.unlock(key, token)
                return result

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            key_args, key_kwargs = call_parts(*args, **kwargs) if call_parts else (args, kwargs)
            store.delete([cached.key(*key_args, **key_kwargs)])

        def key(*args: Any, **kwargs: Any) -> str:
            key_args, key_kwargs = call_parts(*args, **kwargs) if call_parts else (args, kwargs)
            return cached.key(*key_args, **key_kwargs)

        wrapper.invalidate = invalidate
        wrapper.key = key
        return wrapper

    return decorate


# -- views ------------------------------------------------------------------------------------


def cached_view_as(
    *samples: Any,
    timeout: int | None = None,
    extra: Any = None,
    lock: bool | None = None,
    key_func: Callable[..., Any] | None = None,
    keep_fresh: bool = True,
) -> Callable[[F], F]:
    """Cache a view's response like ``cached_as``: GET and HEAD only, 200 only, never a
    streaming response. The key is the host, path and query string plus ``extra`` (a callable
    receives the view's arguments: ``extra=lambda req: req.user.is_staff``). See
    :func:`cacheable_response` for what is never stored.
    """

    def decorate(view: F) -> F:
        def accept(response: Any, args: tuple[Any, ...]) -> bool:
            return cacheable_response(response, args[0] if args else None, extra is not None)

        def parts(request: HttpRequest, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
            return (request_key(request), view_extra(extra, request, *args, **kwargs)), {}

        inner = _decorator(samples, timeout, None, key_func, "v", accept, parts, lock)(view)
        return view_wrapper(view, inner)

    return decorate
