"""Read interception: the one place every ORM read passes, and the QuerySet API on top of it.

The SQL compiler's ``execute_sql`` sees every read with its ``Query``; caching the raw rows the
database returned (before Django's converters) lets one mechanism serve ``get``, iteration,
``values()``, ``count()``, ``exists()``, ``aggregate()``, ``select_related``, prefetches and
foreign-key access, with the SQL compiled once whether it hits or misses. What kind of read it is
(the profile's ``ops``) is known from the QuerySet method that started it, passed down in a
context variable so that nested reads (prefetches inside an iteration) get their own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.models import QuerySet
from django.db.models.sql.constants import MULTI, SINGLE

from freshcache import capture
from freshcache import transaction as tx
from freshcache.conf import ALL_OPS, key_prefix, normalize_ops, on_reset, profile_for, settings
from freshcache.dependencies import query_dependencies
from freshcache.exceptions import SerializationError, UncacheableQuery
from freshcache.keys import params_text, query_key
from freshcache.local import local_gets
from freshcache.serializers import rows_codec
from freshcache.signals import cache_read
from freshcache.store import Plan, store

logger = logging.getLogger("freshcache")

__all__ = ["CacheOptions", "cached_execute_sql", "current_op", "store_rows"]


@dataclass(frozen=True)
class CacheOptions:
    """What ``.cache()``/``.nocache()`` asked for; stored on the Query so it survives chaining."""

    ops: frozenset[str]
    timeout: int | None = None
    lock: bool | None = None


_OPTIONS_ATTR = "_freshcache_options"

#: (op, options) of the QuerySet method running now; None outside any (reads we don't classify).
_current: ContextVar[tuple[str, CacheOptions | None] | None] = ContextVar(
    "freshcache_op", default=None
)
#: An op announced by get()/first()/last() for the iteration they are about to start.
_pending_get: ContextVar[bool] = ContextVar("freshcache_pending_get", default=False)


def current_op() -> tuple[str, CacheOptions | None] | None:
    return _current.get()


def options_of(qs: QuerySet[Any]) -> CacheOptions | None:
    return getattr(qs.query, _OPTIONS_ATTR, None)


def get_scope(method: Callable[..., Any]) -> Callable[..., Any]:
    """get()/first()/last(): the iteration they start counts as a ``get``."""
    import functools

    @functools.wraps(method)
    def wrapper(self: QuerySet[Any], *args: Any, **kwargs: Any) -> Any:
        token = _pending_get.set(True)
        try:
            return method(self, *args, **kwargs)
        finally:
            _pending_get.reset(token)

    return wrapper


def fast_get_scope(method: Callable[..., Any]) -> Callable[..., Any]:
    """get(): the shape :mod:`freshcache.fastget` serves without compiling, else as get_scope."""
    import functools

    from freshcache.fastget import NOT_HANDLED, try_get

    general = get_scope(method)

    @functools.wraps(method)
    def wrapper(self: QuerySet[Any], *args: Any, **kwargs: Any) -> Any:
        found = try_get(self, args, kwargs)
        return general(self, *args, **kwargs) if found is NOT_HANDLED else found

    return wrapper


@contextmanager
def uncached() -> Iterator[None]:
    """Reads in this block go to the database and leave the cache alone (captures aside)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def chain_op_scope(method: Callable[..., Any], op: str) -> Callable[..., Any]:
    """count()/exists()/aggregate(): reads they trigger are classified as ``op``, and
    :mod:`freshcache.chains` serves them when it knows the key."""
    import functools

    from freshcache import chains

    @functools.wraps(method)
    def wrapper(self: QuerySet[Any], *args: Any, **kwargs: Any) -> Any:
        token = _current.set((op, options_of(self)))
        try:
            general = lambda: method(self, *args, **kwargs)  # noqa: E731
            if op == "aggregate":
                return chains.aggregate(self, args, kwargs, general)
            return chains.read(self, op, general)
        finally:
            _current.reset(token)

    return wrapper


def fetch_scope(method: Callable[..., Any]) -> Callable[..., Any]:
    """_fetch_all(): a ``fetch``, or the ``get`` a surrounding get() announced."""
    import functools

    from freshcache import chains

    @functools.wraps(method)
    def wrapper(self: QuerySet[Any]) -> Any:
        if self._result_cache is not None:
            return method(self)
        op = "get" if _pending_get.get() else "fetch"
        token_pending = _pending_get.set(False)
        token = _current.set((op, options_of(self)))
        try:
            return chains.read(self, op, lambda: method(self))
        finally:
            _current.reset(token)
            _pending_get.reset(token_pending)

    return wrapper


# -- QuerySet / Manager API -----------------------------------------------------------------------


def cache(
    self: QuerySet[Any],
    ops: object = None,
    timeout: int | None = None,
    lock: bool | None = None,
) -> QuerySet[Any]:
    """Cache this queryset's reads: ``ops`` defaults to all of them; ``ops=[]`` turns caching off.

    The options live on the query, so ``Article.objects.cache().filter(tag=2)`` stays lazy,
    chainable and cached.
    """
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
        raise TypeError(f".cache(timeout=...) takes seconds as an int, not {timeout!r}")
    if timeout is not None and timeout < 0:
        raise ValueError(f".cache(timeout={timeout}) must be 0 (not cached) or more seconds")
    clone = self._chain()
    chosen = ALL_OPS if ops is None else normalize_ops(ops)
    setattr(clone.query, _OPTIONS_ATTR, CacheOptions(ops=chosen, timeout=timeout, lock=lock))
    return clone


def nocache(self: QuerySet[Any]) -> QuerySet[Any]:
    """Never read or fill the cache for this queryset (and what is chained from it)."""
    return cache(self, ops=())


# -- the interception -----------------------------------------------------------------------------

#: (database, key scope, result shape, SQL, params) -> (plan, value key) or why uncacheable.
_plans: dict[tuple[str, str | None, str, str, str], tuple[Plan, str] | str] = {}
_PLANS_MAX = 4096
_PLAN_TEXT_MAX = 8192


@on_reset
def _forget_plans() -> None:
    _plans.clear()


def _plan_and_key(
    compiler: Any, result_type: str, sql: str, params: Any
) -> tuple[Plan, str | None]:
    """The plan and value key of a compiled read; raises ``UncacheableQuery``.

    Both depend only on the statement (what it reads is what its SQL and parameters say), so
    they are remembered by it: a repeated read skips the dependency walk and the hashing.
    """
    query = compiler.query
    alias = compiler.connection.alias
    profile = profile_for(query.model)
    db = None if profile is None or profile.db_agnostic else alias
    # Rows are stored after trimming to col_count: two queries sharing SQL but not that shape
    # must not share a key.
    extra = getattr(compiler, "has_extra_select", False)
    shape = f"{result_type}:{getattr(compiler, 'col_count', None)}:{int(extra)}"
    params = tuple(params)
    memo = None
    text = params_text(params)
    if text is not None and len(sql) + len(text) <= _PLAN_TEXT_MAX:
        memo = (alias, db, shape, sql, text)
        known = _plans.get(memo)
        if known is not None:
            if isinstance(known, str):
                raise UncacheableQuery(known)
            if known[0].current(alias):
                return known
    try:
        deps = query_dependencies(query, max_in=settings.MAX_IN, using=alias)
    except UncacheableQuery as exc:
        if memo is not None:
            _remember(memo, str(exc))
        raise
    prefix = key_prefix(alias, tuple(sorted(deps)))
    plan = Plan.build(deps, prefix)
    key = query_key(prefix, sql, params, db, shape)
    if memo is not None and key is not None:
        _remember(memo, (plan, key))
    return plan, key


def _remember(memo: tuple[str, str | None, str, str, str], found: tuple[Plan, str] | str) -> None:
    if len(_plans) >= _PLANS_MAX:
        with contextlib.suppress(KeyError, StopIteration, RuntimeError):  # a racing thread
            del _plans[next(iter(_plans))]
    _plans[memo] = found


def _memoize_sql(compiler: Any) -> tuple[str, Any]:
    """Compile once: Django's execute_sql calls as_sql() again on a miss."""
    sql, params = compiler.as_sql()
    original = type(compiler).as_sql

    def as_sql(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return original(compiler, *args, **kwargs)
        return sql, params

    compiler.as_sql = as_sql
    return sql, params


def _cache_policy(
    compiler: Any, result_type: str, chunked_fetch: bool
) -> tuple[int, bool, bool] | None:
    """(timeout, dog-pile lock, process-local) for this read, or None when it must not use the
    cache."""
    scope = _current.get()
    if scope is None or chunked_fetch or result_type not in (MULTI, SINGLE):
        return None
    query = compiler.query
    if query.model is None or query.select_for_update:
        return None
    return policy_for(query.model, *scope)


def policy_for(model: Any, op: str, options: CacheOptions | None) -> tuple[int, bool, bool] | None:
    """The policy of an ``op`` read of ``model`` under ``.cache()`` options, from its profile."""
    profile = profile_for(model)
    if profile is None:
        return None
    ops = options.ops if options is not None else profile.ops
    if op not in ops:
        return None
    timeout = profile.timeout
    lock = profile.lock
    if options is not None:
        if options.timeout is not None:
            timeout = options.timeout
        if options.lock is not None:
            lock = options.lock
    return (timeout, lock, op == "get" and profile.local_get) if timeout else None


@dataclass
class Learned:
    """What a read's general path computed, for :mod:`freshcache.chains` to remember."""

    compiler: Any
    result_type: str
    plan: Plan
    key: str
    sql: str
    params: Any


#: Set by a fast read that wants the next cacheable read's plan and key (its own, compiled).
learning: ContextVar[list[Learned] | None] = ContextVar("freshcache_learning", default=None)
#: (key, probe) a fast read already looked up and missed: the general path reuses the probe
#: instead of a second round trip.
probed: ContextVar[tuple[str, Any] | None] = ContextVar("freshcache_probed", default=None)


#: Stamps read only for a capture live at least this long (a stored value extends them).
_CAPTURE_STAMP_TTL = 60 * 60


def cached_execute_sql(
    execute: Callable[..., Any],
    compiler: Any,
    result_type: str,
    chunked_fetch: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Serve ``compiler.execute_sql`` from the cache when the read may be cached, and record
    what it reads for any active capture (``@cached_as()`` with no samples)."""
    if not settings.ENABLED:
        return execute(compiler, *args, **kwargs)
    captures = capture.active()
    policy = _cache_policy(compiler, result_type, chunked_fetch)
    if policy is None and not captures:
        return execute(compiler, *args, **kwargs)
    if not captures:
        return _read(execute, compiler, result_type, args, kwargs, policy, captures)
    token = capture.orm_read.set(True)
    try:
        return _read(execute, compiler, result_type, args, kwargs, policy, captures)
    finally:
        capture.orm_read.reset(token)


def _read(
    execute: Callable[..., Any],
    compiler: Any,
    result_type: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: tuple[int, bool, bool] | None,
    captures: tuple[capture.Capture, ...],
) -> Any:
    query = compiler.query
    timeout = policy[0] if policy else None
    connection = compiler.connection
    if tx.is_dirty(connection):
        capture.poison("a read on a connection with uncommitted writes")
        return execute(compiler, *args, **kwargs)
    try:
        sql, params = _memoize_sql(compiler)
    except EmptyResultSet:  # reads nothing, depends on nothing
        if policy is not None:  # a cached read that needs no round trip: a miss, as cacheops says
            cache_read.send(sender=query.model, func=None, hit=False)
        return execute(compiler, *args, **kwargs)
    try:
        plan, key = _plan_and_key(compiler, result_type, sql, params)
    except UncacheableQuery as exc:
        capture.poison(str(exc))
        return execute(compiler, *args, **kwargs)
    if timeout is None:
        key = None
    if key is None or timeout is None:
        # Not cached itself; a capture still needs the stamps, read before the database.
        tokens = store.read_stamps(plan, _CAPTURE_STAMP_TTL) if tx.can_store(connection) else None
        _record(plan, tokens)
        return execute(compiler, *args, **kwargs)
    model = query.model
    slot = learning.get()
    if slot is not None:
        slot.append(Learned(compiler, result_type, plan, key, sql, params))
    # Nothing from memory while this process owes invalidations (an outage, a partition).
    local = bool(policy and policy[2]) and not captures and store.healthy()
    seq = local_gets.seq
    if local:
        rows = local_gets.get(key)
        if rows is not None:
            cache_read.send(sender=model, func=None, hit=True)
            return [rows] if result_type == MULTI else rows
    earlier = probed.get()
    if earlier is not None and earlier[0] == key:
        probed.set(None)
        probe = earlier[1]
    else:
        probe = store.lookup(key, plan, timeout)
    hit = _served(probe, plan, key, result_type, captures, model)
    if hit is not _MISS:
        if local:
            local_gets.put(key, hit[0] if result_type == MULTI else hit, plan.keys, seq)
        return hit
    lock = None
    if probe is not None and policy and policy[1] and tx.can_store(connection):
        lock = store.lock_or_wait(key, settings.LOCK_TIMEOUT)
        if lock is None:  # someone else computed it meanwhile (or gave up): look again
            probe = store.lookup(key, plan)
            hit = _served(probe, plan, key, result_type, captures, model)
            if hit is not _MISS:
                return hit
    try:
        result, stored = _miss(
            execute, compiler, result_type, args, kwargs, key, plan, probe, captures, timeout,
            wait=lock is not None,
        )  # fmt: skip
        if local and stored is not None:
            local_gets.put(key, stored, plan.keys, seq)
        return result
    finally:
        if lock is not None:
            store.unlock(key, lock)


_MISS = object()


def _served(
    probe: Any,
    plan: Plan,
    key: str,
    result_type: str,
    captures: tuple[capture.Capture, ...],
    model: Any,
) -> Any:
    """The rows a probe found, shaped as execute_sql returns them, or ``_MISS``."""
    if probe is None or probe.data is None:
        return _MISS
    try:
        rows = rows_codec().loads(probe.data)
    except Exception as exc:  # a payload we cannot read is a miss, whatever the codec
        logger.warning("freshcache: payload at %s rejected (%s), reading the database", key, exc)
        return _MISS
    if captures:
        _record(plan, store.tokens_of(probe))
    cache_read.send(sender=model, func=None, hit=True)
    return [rows] if result_type == MULTI else rows


def _miss(
    execute: Callable[..., Any],
    compiler: Any,
    result_type: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str,
    plan: Plan,
    probe: Any,
    captures: tuple[capture.Capture, ...],
    timeout: int,
    wait: bool = True,
) -> tuple[Any, Any]:
    """Read stamps, query the database, store the rows with the stamps read first.

    Returns the result and the rows as stored (None if they were not)."""
    connection = compiler.connection
    tokens = None
    if probe is not None and tx.can_store(connection):
        tokens = store.prepare(probe, timeout)
    if captures:
        _record(plan, tokens)
    model = compiler.query.model
    result = execute(compiler, *args, **kwargs)
    stored = None
    if tokens is not None:
        if result_type == MULTI:
            result = list(result)
            payload: Any = [row for chunk in result for row in chunk]
        else:
            payload = result
        if store_rows(key, tokens, payload, timeout, plan, probe, wait):
            stored = payload
    cache_read.send(sender=model, func=None, hit=False)
    return result, stored


def store_rows(
    key: str, tokens: list[bytes], payload: Any, timeout: int, plan: Plan, probe: Any, wait: bool
) -> bool:
    """Store a miss's rows against the tokens its lookup read before the query; whether they
    were stored (a payload the codec refuses is not, and never breaks the read)."""
    try:
        data = rows_codec().dumps(payload)
    except SerializationError as exc:
        logger.debug("freshcache: %s not cached: %s", key, exc)
    except Exception as exc:  # a custom codec's bug must not break the read
        logger.warning("freshcache: %s not cached, the serializer failed: %r", key, exc)
    else:
        return store.save(key, tokens, data, timeout, plan, wait=wait, touch=not probe.touched)
    return False


def _record(plan: Plan, tokens: list[bytes] | None) -> None:
    if tokens is None:
        capture.poison("the stamps of a read could not be read")
    else:
        capture.record(plan.keys, tokens)
