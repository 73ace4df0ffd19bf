"""``get(<field>=value)`` served without building a filter or compiling SQL.

The general read path (:mod:`freshcache.queryset`) keys a value by its SQL, so a hit pays for
Django's ``filter()`` and the SQL compiler before its one round trip, about as much as the round
trip itself. The commonest read of all, ``Model.objects.get(pk=...)`` (and a related object's
``book.author``), has a shape known without compiling: one table, its default columns, one
equality. For that shape alone the key is built from the model's columns, the field and the
prepared value, and the plan from the same stamp rules the dependency walker applies.

Safe by construction rather than by care:

* only a queryset whose ``Query`` is exactly a fresh ``Query(model)`` qualifies (compared
  attribute by attribute: any ``filter``, ``only``, ``select_related``, annotation, slice or lock
  falls back to the general path), on Django's own QuerySet and iterable classes;
* the key names the database, the model's label and columns, the column compared and the
  type-tagged prepared value, which fix the statement Django would send; it lives in its own
  ``o:`` namespace, so it can never meet a key of the general path;
* a value is stored only after a miss has compiled the real query and the dependency walker
  agreed, for that very query, with the plan the fast path uses; if they ever disagree the fast
  path is turned off for that field, with a warning.

Rows are cached raw, as the database returned them, and rebuilt with the same converters and
``Model.from_db`` the ORM uses.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any
from uuid import UUID

from django.db import connections
from django.db.models import Q, QuerySet
from django.db.models.query import MAX_GET_RESULTS, ModelIterable
from django.db.models.sql.constants import MULTI
from django.db.models.sql.query import Query

from freshcache import capture, rebuild, writethrough
from freshcache import transaction as tx
from freshcache.conf import key_prefix, on_reset, profile_for, settings
from freshcache.dependencies import Deps, query_dependencies, text_exact
from freshcache.exceptions import SerializationError, UncacheableQuery
from freshcache.local import local_gets
from freshcache.memo import Memo
from freshcache.prepared import where_allowed
from freshcache.serializers import rows_codec
from freshcache.signals import cache_read
from freshcache.stamps import UNKNOWN, column_value, field_info
from freshcache.store import Plan, store

__all__ = ["NOT_HANDLED", "overrides_none", "pristine", "shape_of", "try_get"]

logger = logging.getLogger("freshcache")

#: Returned when the call is not of the fast shape: the caller runs Django's own ``get()``.
NOT_HANDLED: Any = object()

#: Query attributes a pristine query may differ in: a cached property and our own options.
_IGNORED = frozenset({"base_table", "_freshcache_options"})
#: QuerySet methods a get() goes through; a subclass overriding any of them is not ours to skip.
_QS_METHODS = ("get", "filter", "_filter_or_exclude", "order_by", "_chain", "_clone", "__len__",
               "_fetch_all", "__iter__", "iterator")  # fmt: skip
_VALUE_TYPES = (int, str, UUID)
_MISSING = object()
#: Longer text values are not remembered: the memo holds 4,096 values, which may be user input.
_MAX_MEMO_TEXT = 200


@dataclass(frozen=True)
class _Shape:
    """What is fixed per model: the pristine query's state and the lookups that qualify."""

    baseline: tuple[tuple[str, object], ...]
    names: frozenset[str]
    n_attrs: int
    fields: dict[str, Any]
    table: str
    columns: str


_shapes: dict[type, _Shape | None] = {}
_qs_classes: dict[tuple[type, tuple[str, ...]], bool] = {}
_disabled: set[tuple[type, str]] = set()
_vouched_for: set[tuple[type, str, str, type]] = set()
#: The statement a fill sends, per (model, attname, db, value type, connection class, Query
#: class), taken from the compiler on a vouched fill; see :func:`_statement`.
_statements: Memo[tuple[Any, ...], str] = Memo()
#: (key, plan, deps) by (prefix, scope, db, model, attname, value type, value).
_keys: Memo[tuple[Any, ...], tuple[str, Plan, Deps]] = Memo()
_lock = threading.Lock()


@on_reset
def _forget() -> None:
    with _lock:
        _shapes.clear()
        _disabled.clear()
        _vouched_for.clear()


def shape_of(model: type) -> _Shape | None:
    try:
        return _shapes[model]
    except KeyError:
        pass
    opts = model._meta  # type: ignore[attr-defined]
    shape = None
    if not opts.parents and not opts.abstract:
        state = vars(Query(model))
        baseline = tuple((k, v) for k, v in state.items() if k not in _IGNORED)
        fields: dict[str, Any] = {}
        for field in opts.concrete_fields:
            if field.is_relation and not field.primary_key:
                continue
            for name in {field.name, field.attname}:
                fields[name] = fields[f"{name}__exact"] = field
            if field.primary_key:
                fields["pk"] = fields["pk__exact"] = field
        columns = ",".join(f.column for f in opts.concrete_fields)
        shape = _Shape(
            baseline,
            frozenset(k for k, _ in baseline),
            len(baseline),
            fields,
            opts.db_table,
            columns,
        )
    with _lock:
        _shapes[model] = shape
    return shape


def overrides_none(qs_class: type, members: tuple[str, ...]) -> bool:
    """Whether ``qs_class`` inherits each of ``members`` from Django's ``QuerySet`` untouched."""
    key = (qs_class, members)
    verdict = _qs_classes.get(key)
    if verdict is None:
        verdict = all(getattr(qs_class, m) is getattr(QuerySet, m) for m in members)
        _qs_classes[key] = verdict
    return verdict


def _django_exact(field: Any) -> bool:
    """Whether ``field__exact`` is Django's own lookup (a registered one may compare otherwise)."""
    lookup = field.get_lookup("exact")
    return lookup is not None and lookup.__module__.startswith("django.")


def pristine(query: Query, shape: _Shape) -> bool:
    """Whether ``query`` is a fresh ``Query(model)``: the same instance state, where an attribute
    a clone sets to its class default counts as unset."""
    state = vars(query)
    if len(state) != shape.n_attrs:
        cls = type(query)
        for k, v in state.items():
            if k not in shape.names and k not in _IGNORED:
                default = getattr(cls, k, _MISSING)
                if default is _MISSING or default != v:
                    return False
    try:
        return all(state[k] == v for k, v in shape.baseline)
    except KeyError:
        return False


def _lookup(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, object] | None:
    if kwargs:
        if args or len(kwargs) != 1:
            return None
        return next(iter(kwargs.items()))
    if len(args) != 1:
        return None
    q = args[0]
    # A related object's descriptor calls get(Q(("id", 5))).
    if type(q) is not Q or q.negated or len(q.children) != 1:
        return None
    child = q.children[0]
    if type(child) is not tuple or len(child) != 2 or type(child[0]) is not str:
        return None
    return child


def try_get(qs: QuerySet[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The object ``qs.get(*args, **kwargs)`` returns, or :data:`NOT_HANDLED`."""
    if not settings.ENABLED:
        return NOT_HANDLED
    lookup = _lookup(args, kwargs)
    if lookup is None:
        return NOT_HANDLED
    model = qs.model
    shape = shape_of(model)
    if shape is None:
        return NOT_HANDLED
    field = shape.fields.get(lookup[0])
    value = lookup[1]
    if field is None or type(value) not in _VALUE_TYPES or (model, field.attname) in _disabled:
        return NOT_HANDLED
    if not _django_exact(field):
        return NOT_HANDLED
    if (
        qs._iterable_class is not ModelIterable
        or qs._fields is not None
        or qs._prefetch_related_lookups
        or qs._known_related_objects
        or qs._sticky_filter
        or qs._defer_next_filter
        or qs._deferred_filter is not None
        or not overrides_none(type(qs), _QS_METHODS)
        or not rebuild.supported(qs)
    ):
        return NOT_HANDLED
    query = qs.query
    if not pristine(query, shape):
        return NOT_HANDLED
    policy = _policy(model, query)
    if policy is None or capture.active():
        return NOT_HANDLED
    db = qs.db
    connection = connections[db]
    if tx.is_dirty(connection):
        return NOT_HANDLED
    try:
        prepped = field.get_prep_value(value)
    except Exception:  # Django's own get() raises the error users expect
        return NOT_HANDLED
    if type(prepped) not in _VALUE_TYPES:
        return NOT_HANDLED
    if type(prepped) is int and not _in_range(field, prepped, connection):
        return NOT_HANDLED  # Django answers DoesNotExist without a query (5.0+) or raises
    return _get(qs, model, shape, field, prepped, lookup, db, connection, policy)


def _in_range(field: Any, value: int, connection: Any) -> bool:
    """Whether ``value`` fits the integer column ``field`` compares (its target's, through a
    relation) on ``connection``: beyond it the statement is not what Django would send."""
    if not -(1 << 63) <= value < 1 << 63:
        return False
    while field.is_relation:
        field = field.target_field
    try:
        low, high = connection.ops.integer_field_range(field.get_internal_type())
    except (KeyError, AttributeError):
        return True  # not an integer column: its own type decides
    return (low is None or value >= low) and (high is None or value <= high)


def _policy(model: type, query: Query) -> tuple[int, bool, bool] | None:
    profile = profile_for(model)
    if profile is None:
        return None
    options = getattr(query, "_freshcache_options", None)
    ops = options.ops if options is not None else profile.ops
    if "get" not in ops:
        return None
    timeout, lock = profile.timeout, profile.lock
    if options is not None:
        timeout = options.timeout if options.timeout is not None else timeout
        lock = options.lock if options.lock is not None else lock
    if not timeout:
        return None
    return timeout, lock, profile.local_get


def _deps(shape: _Shape, field: Any, prepped: object, db: str) -> Deps:
    """What the dependency walker makes of ``WHERE <column> = prepped`` on one table."""
    kind = field_info(field)[1]
    if kind is str and not text_exact(db):
        kind = None
    if kind is not None:
        value: Hashable = column_value(field, prepped)
        if value is not None and value is not UNKNOWN:
            return {shape.table: frozenset({((field.column, value),)})}
    return {shape.table: frozenset({()})}


@dataclass
class _Read:
    """One fast get(): what it reads, where, and under which key and plan."""

    qs: QuerySet[Any]
    model: Any
    field: Any
    lookup: tuple[str, object]
    prepped: object
    db: str
    connection: Any
    key: str
    plan: Plan
    deps: Deps
    timeout: int
    #: The tokens the fill stored the rows with.
    tokens: list[bytes] | None = None


def _get(
    qs: QuerySet[Any],
    model: Any,
    shape: _Shape,
    field: Any,
    prepped: object,
    lookup: tuple[str, object],
    db: str,
    connection: Any,
    policy: tuple[int, bool, bool],
) -> Any:
    timeout, use_lock, local_get = policy
    profile = profile_for(model)
    prefix = key_prefix(db, (shape.table,))
    scope = "" if profile is not None and profile.db_agnostic else db
    memo = (prefix, scope, db, model, field.attname, type(prepped), prepped)
    known = _keys.get(memo)
    if known is None:
        known = _key_and_plan(shape, model, field, prepped, db, prefix, scope)
        if not isinstance(prepped, str) or len(prepped) <= _MAX_MEMO_TEXT:
            _keys.put(memo, known)
    key, plan, deps = known
    local = local_get and store.healthy()
    seq = local_gets.seq
    if local:
        rows = local_gets.get(key)
        if rows is not None:
            cache_read.send(sender=model, func=None, hit=True)
            return rebuild.got(model, qs, db, connection, rows)
    probe = store.lookup(key, plan, timeout)
    rows = _decoded(probe, key)
    hit = rows is not None
    if not hit:  # what a fill needs, built only for a miss
        read = _Read(qs, model, field, lookup, prepped, db, connection, key, plan, deps, timeout)
    if not hit and probe is not None and use_lock and tx.can_store(connection):
        token = store.lock_or_wait(key, settings.LOCK_TIMEOUT)
        if token is None:  # someone else computed it meanwhile (or gave up): look again
            probe = store.lookup(key, plan)
            rows = _decoded(probe, key)
            hit = rows is not None
        else:
            try:
                rows = _fill(read, probe, wait=True)  # others wait for this value: ack it
            finally:
                store.unlock(key, token)
    if rows is None:
        rows = _fill(read, probe)
    if local and (hit or tx.can_store(connection)):
        # Never rows the cache could not hold: a snapshot's, or the connection's own writes.
        local_gets.put(key, rows, plan.keys, seq)
    cache_read.send(sender=model, func=None, hit=hit)
    obj = rebuild.got(model, qs, db, connection, rows)
    tokens = None
    if field.primary_key and connection.vendor == "postgresql":  # what a save may write through
        tokens = read.tokens if not hit else store.tokens_of(probe) if probe else None
    if tokens is not None:
        loaded = writethrough.Loaded(key, plan, tuple(tokens), timeout, prepped, db)
        fixed = (model, field.attname, db, type(prepped), type(connection), type(qs.query))
        writethrough.remember(obj, loaded, _statements.get(fixed), connection)
    return obj


def _key_and_plan(
    shape: _Shape, model: Any, field: Any, prepped: object, db: str, prefix: str, scope: str
) -> tuple[str, Plan, Deps]:
    """The value key, plan and dependencies of ``get(<field>=prepped)``: everything in them
    comes from the arguments (the prefix too, taken per call since a callable prefix may
    change), which is why :func:`_get` remembers them by those."""
    deps = _deps(shape, field, prepped, db)
    text = (
        f"{scope}\x00{model._meta.label_lower}\x00{shape.table}\x00{shape.columns}\x00"
        f"{field.column}\x00{type(prepped).__name__}\x00{prepped}"
    )
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"{prefix}o:{digest.hexdigest()}", Plan.build(deps, prefix), deps


def _decoded(probe: Any, key: str) -> list[Sequence[Any]] | None:
    if probe is None or probe.data is None:
        return None
    try:
        return rows_codec().loads(probe.data)
    except Exception as exc:  # a payload we cannot read is a miss, whatever the codec
        logger.warning("freshcache: payload at %s rejected (%s), reading the database", key, exc)
        return None


def _fill(read: _Read, probe: Any, wait: bool = False) -> list[Sequence[Any]]:
    """Run the real query (uncached) and store its raw rows if the walker agrees."""
    connection = read.connection
    can_store = probe is not None and tx.can_store(connection)
    tokens = store.prepare(probe, read.timeout) if can_store else None
    known = _statement_key(read)
    sql = _statements.get(known) if known is not None else None
    if sql is not None:
        # Its one value is compared with its column: it may be prepared (freshcache.prepared).
        with where_allowed(connection), connection.cursor() as cursor:
            cursor.execute(sql, (_db_param(read),))
            rows = cursor.fetchall()
    else:
        rows, vouched = _compiled_fill(read, known, tokens is not None)
        if not vouched:
            return rows
    if tokens is None:
        return rows
    try:
        data = rows_codec().dumps(rows)
    except SerializationError as exc:
        logger.debug("freshcache: %s not cached: %s", read.key, exc)
    except Exception as exc:  # a custom codec's bug must not break the read
        logger.warning("freshcache: %s not cached, the serializer failed: %r", read.key, exc)
    else:
        if store.save(read.key, tokens, data, read.timeout, read.plan, wait=wait,
                      touch=not probe.touched):  # fmt: skip
            read.tokens = tokens
    return rows


def _compiled_fill(
    read: _Read, known: tuple[Any, ...] | None, storing: bool
) -> tuple[list[Sequence[Any]], bool]:
    """The fill through ``filter()`` and the compiler: the rows, and whether the walker vouched
    for the fast plan (the statement is then remembered for the next fills)."""
    from freshcache.queryset import uncached

    clone = read.qs.filter(**{read.lookup[0]: read.lookup[1]}).order_by()
    clone.query.set_limits(high=MAX_GET_RESULTS)
    compiler = clone.query.get_compiler(using=read.db)
    statement = compiler.as_sql() if storing and known is not None else None
    with uncached():
        rows = list(chain.from_iterable(compiler.execute_sql(MULTI)))
    rebuild.learn(read.model, read.db, compiler)
    if not storing or not _vouched(clone.query, read):
        return rows, False
    if statement is not None and known is not None:
        _statement(known, statement, read)
    return rows, True


def _statement_key(read: _Read) -> tuple[Any, ...] | None:
    """What fixes the statement a fill sends, apart from the value; None when the value itself
    may change it (a backend that reads ``''`` as NULL compiles ``= ''`` to ``IS NULL``)."""
    connection = read.connection
    if connection.features.interprets_empty_strings_as_nulls:
        return None
    return (read.model, read.field.attname, read.db, type(read.prepped), type(connection),
            type(read.qs.query))  # fmt: skip


def _db_param(read: _Read) -> Any:
    """The parameter Django's ``exact`` lookup sends for the prepared value (the target field's
    conversion for a relation)."""
    field = read.field
    target = getattr(field, "target_field", None) or field
    return target.get_db_prep_value(read.prepped, read.connection, prepared=True)


def _statement(known: tuple[Any, ...], compiled: tuple[str, Any], read: _Read) -> None:
    """Remember the compiled statement when its only parameter is the one :func:`_db_param`
    gives: the next fills of the key run it directly, skipping ``filter()`` and the compiler,
    which cost about as much as the query itself."""
    sql, params = compiled
    params = tuple(params)
    try:
        mine = _db_param(read)
    except Exception:
        return
    if len(params) == 1 and type(params[0]) is type(mine) and params[0] == mine:
        _statements.put(known, sql)


def _vouched(query: Query, read: _Read) -> bool:
    """Whether the dependency walker computes ``deps`` for the compiled query.

    The fast plan depends only on the field, the database and the value's type (values of the
    types served here always normalize), so one agreement per such triple is enough; the first
    disagreement turns the fast path off for the field.
    """
    model, field, deps = read.model, read.field, read.deps
    vouch = (model, field.attname, read.db, type(read.prepped))
    if vouch in _vouched_for:
        return True
    try:
        walked = query_dependencies(query, max_in=settings.MAX_IN, using=read.db)
    except UncacheableQuery:
        walked = None
    if walked == deps:
        with _lock:
            _vouched_for.add(vouch)
        return True
    with _lock:
        _disabled.add((model, field.attname))
    logger.warning(
        "freshcache: get(%s=...) on %s is served by the general path from now on: its "
        "dependencies (%r) differ from the fast path's (%r)",
        field.name, model._meta.label, walked, deps,
    )  # fmt: skip
    return False
