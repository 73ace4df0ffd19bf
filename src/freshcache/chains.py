"""Reads of ``filter()``/``exclude()``/``order_by()``/``select_related()``/slice chains served
without compiling SQL.

The general read path keys a value by its compiled SQL, so a hit pays for the SQL compiler
(and, for ``count()``, for building the aggregation query) before its one round trip. Yet a
queryset made from a fresh one by a few plain method calls is fully described by those calls:
``Item.objects.filter(category_id=3).order_by("id")[:20]`` is the same statement every time it is
built, in one process, on one database. So the QuerySet methods below record what they were
called with, and a read of a recorded chain looks the chain up in a per-process memo of what the
general path computed for it (plan and key), learned from that path on the chain's first read.
Fast and general reads therefore share keys, values and invalidation; the chain only saves the
compilation that would reproduce a key already known.

What makes a chain a faithful name for its statement, checked rather than hoped for:

* it starts from a queryset whose ``Query`` is exactly a fresh ``Query(model)`` (as
  :mod:`freshcache.fastget` checks), on a QuerySet class that does not override how filters are
  applied or querysets cloned;
* every step is recorded from the arguments Django's own method received, with values of a few
  plain types, type-tagged (``1``, ``True`` and ``1.0`` never meet); a lookup path must name
  Django's own fields and end in one of Django's own comparison lookups (no transforms, whose SQL
  can depend on the current time zone, nor a registered replacement of a lookup);
* the query a recorded step produced is sealed (its attributes, joins, annotations and filter
  conditions by identity, its ``select_related`` tree and ``__in`` lists by value); a query
  changed behind the methods' back (``qs.query.set_limits(...)``, a library that edits
  ``qs.query`` or the objects in it) no longer matches its seal and reads the general way;
* the memo is keyed by operation, database, model and the whole chain with its values;
* ``select_related()`` names Django's own forward foreign keys and one-to-one fields only, and a
  fetch remembers where the compiler put each model's columns (:func:`rebuild.layout_of`), so
  the related objects are built by Django's own populators.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.core.exceptions import FieldDoesNotExist
from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import ModelIterable
from django.db.models.sql.constants import MULTI, SINGLE
from django.db.models.sql.query import Query

from freshcache import aggregates, capture, directmiss, fastget, fieldpaths, rebuild
from freshcache import transaction as tx
from freshcache.conf import on_reset, profile_for, settings
from freshcache.memo import Memo
from freshcache.queryset import Learned, learning, options_of, policy_for, probed
from freshcache.serializers import rows_codec
from freshcache.signals import cache_read
from freshcache.store import Plan, store

__all__ = ["aggregate", "read", "recording"]

logger = logging.getLogger("freshcache")

_ATTR = "_freshcache_chain"
_SCALARS = frozenset({int, str, bool, UUID, type(None)})
_LOOKUPS = frozenset({
    "exact", "iexact", "contains", "icontains", "in", "gt", "gte", "lt", "lte", "startswith",
    "istartswith", "endswith", "iendswith", "isnull", "range",
})  # fmt: skip
#: QuerySet members that apply filters or clone; a subclass overriding one is not recorded.
_QS_MEMBERS = ("_filter_or_exclude", "_filter_or_exclude_inplace", "_chain", "_clone", "query")
_MEMO_MAX = 4096

#: Set by tests: every memo hit is also read the general way and must name the same key.
verify = False


@dataclass(frozen=True)
class _Entry:
    plan: Plan
    key: str
    #: For ``aggregate()``: what Django does with the row (not part of what names the read).
    finish: aggregates.Finisher | None = dataclasses.field(default=None, compare=False)
    #: For a fetch with ``select_related()``: where each model sits in the rows.
    layout: rebuild.Layout | None = dataclasses.field(default=None, compare=False)
    #: What a miss sends (:mod:`freshcache.directmiss`); None: the general path.
    statement: directmiss.Statement | None = dataclasses.field(default=None, compare=False)


_memo: dict[Hashable, _Entry] = {}
_paths: Memo[tuple[type, str], tuple[Any, str] | None] = Memo(_MEMO_MAX)
_orderings: Memo[tuple[type, str], bool] = Memo(_MEMO_MAX)
_lookup_classes: dict[type, bool] = {}


@on_reset
def _forget() -> None:
    _memo.clear()


# -- what a step may contain ----------------------------------------------------------------------


def _resolve(model: Any, name: str, lookups: frozenset[str]) -> tuple[Any, str] | None:
    """(field compared, lookup name) for a filter keyword or an ordering (``lookups`` empty),
    or None outside the plain shapes: Django's own fields, through relations."""
    parts = name.split("__")
    opts = model._meta
    field = None
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if field is not None:
            if not field.is_relation or field.related_model is None:
                return (field, part) if i == last and part in lookups else None
            opts = field.related_model._meta
        try:
            found = opts.pk if part == "pk" else opts.get_field(part)
        except FieldDoesNotExist:
            return (field, part) if field is not None and i == last and part in lookups else None
        if not fieldpaths.django_field(found):
            return None
        field = found
    return (field, "exact") if field is not None else None


def _path(model: Any, name: str) -> tuple[Any, str] | None:
    key = (model, name)
    try:
        return _paths[key]
    except KeyError:
        pass
    found = _resolve(model, name, _LOOKUPS)
    if found is not None:
        field, lookup = found
        forward = field.concrete and not field.many_to_many
        compared = field.target_field if field.is_relation and forward else field
        # A reverse or many-to-many relation compares through a join: isnull only.
        if lookup != "isnull" and (
            not forward
            or not fieldpaths.django_field(compared)
            or compared.get_internal_type() in fieldpaths.TEMPORAL
        ):
            found = None
    return _paths.put(key, found)  # bounded: names can come from user input


def _django_lookup(field: Any, name: str) -> bool:
    """Whether ``name`` on ``field`` is still Django's own lookup (one may be registered)."""
    cls = field.get_lookup(name)
    if cls is None:
        return False
    verdict = _lookup_classes.get(cls)
    if verdict is None:
        verdict = cls.__module__.startswith("django.db.models")
        _lookup_classes[cls] = verdict
    return verdict


def _tag(value: object) -> Hashable | None:
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if kind is float:
        return (float, repr(value))
    return None


def _tagged(lookup: str, value: object) -> Hashable | None:
    if lookup == "isnull":
        return (bool, value) if type(value) is bool else None
    if lookup in ("in", "range"):
        if type(value) not in (list, tuple):
            return None
        items = tuple(_tag(v) for v in value)  # type: ignore[attr-defined]
        if None in items or (lookup == "range" and len(items) != 2):
            return None
        return (type(value), items)
    return _tag(value)


def _filter_step(model: Any, negate: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if args:
        return None
    pairs = []
    for name in sorted(kwargs):
        found = _path(model, name)
        if found is None or not _django_lookup(*found):
            return None
        tagged = _tagged(found[1], kwargs[name])
        if tagged is None:
            return None
        pairs.append((name, tagged))
    return ("x" if negate else "f", tuple(pairs))


def _related_path(model: Any, name: object) -> bool:
    """Whether ``name`` follows Django's own forward foreign keys and one-to-one fields only."""
    fields = fieldpaths.forward_path(model, name) if type(name) is str and name else None
    return fields is not None and all(f.many_to_one or f.one_to_one for f in fields)


def _orderable(model: Any, name: object) -> bool:
    if type(name) is not str:
        return False
    key = (model, name)
    verdict = _orderings.get(key)
    if verdict is None:
        path = name.removeprefix("-")
        verdict = name != "?" and _resolve(model, path, frozenset()) is not None
        _orderings.put(key, verdict)
    return verdict


# -- recording ------------------------------------------------------------------------------------


def _seal(query: Query) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(objects held, compared by identity; a shape, compared by value): the query's
    attributes, its joins and annotations, each filter condition and its two sides, the
    ``select_related`` tree and the values of an ``__in`` list. Holding the objects keeps
    their ids from being reused while the seal lives."""
    held: list[Any] = [*vars(query).values(), *query.alias_map.values()]
    held.extend(query.annotations.values())
    related = query.select_related
    shape: list[Any] = [_frozen(related) if type(related) is dict else related]
    _walk_where(query.where, held, shape)
    return tuple(held), tuple(shape)


def _walk_where(node: Any, held: list[Any], shape: list[Any]) -> None:
    shape.append((node.connector, node.negated, len(node.children)))
    for child in node.children:
        held.append(child)
        if hasattr(child, "children"):
            _walk_where(child, held, shape)
            continue
        rhs: Any = getattr(child, "rhs", None)
        held.append(getattr(child, "lhs", None))
        held.append(rhs)
        if type(rhs) in (list, tuple):
            shape.append(tuple(rhs))


def _frozen(tree: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((name, _frozen(sub)) for name, sub in sorted(tree.items()))


def _sealed(query: Query, seal: tuple[tuple[Any, ...], tuple[Any, ...]]) -> bool:
    held, shape = _seal(query)
    kept = seal[0]
    return (
        len(held) == len(kept)
        and all(a is b for a, b in zip(held, kept, strict=True))
        and shape == seal[1]
    )


def _steps(qs: QuerySet[Any]) -> tuple[Any, ...] | None:
    """The chain that made ``qs``, or None when it is not (or no longer) a recorded chain."""
    record = qs.__dict__.get(_ATTR)
    if record is not None:
        steps, query, seal = record
        if qs._query is query and _sealed(query, seal):
            return steps
        return None
    if (
        qs._deferred_filter is not None
        or qs._defer_next_filter
        or qs._sticky_filter
        or qs._known_related_objects
        or not fastget.overrides_none(type(qs), _QS_MEMBERS)
        or type(qs._query) is not Query
    ):
        return None
    shape = fastget.shape_of(qs.model)
    if shape is None or not fastget.pristine(qs._query, shape):
        return None
    return ()


def _record(clone: QuerySet[Any], steps: tuple[Any, ...]) -> None:
    if (
        clone._deferred_filter is None
        and not clone._defer_next_filter
        and type(clone._query) is Query
    ):
        query = clone._query
        clone.__dict__[_ATTR] = (steps, query, _seal(query))


def recording(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a QuerySet method so the queryset it returns remembers the call (see the module)."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: QuerySet[Any], *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            if not isinstance(result, QuerySet) or result is self or not settings.ENABLED:
                return result
            model = self.model
            if model is None or profile_for(model) is None:
                return result  # never cached, not even by .cache(): nothing to name
            step = _step(kind, model, args, kwargs)
            if step is None:
                return result
            steps = _steps(self)
            if steps is not None:
                _record(result, steps if step == () else (*steps, step))
            return result

        return wrapper

    return wrap


def _step(kind: str, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if kind == "all":
        return ()
    if kind in ("filter", "exclude"):
        if not args and not kwargs:
            return () if kind == "filter" else None
        return _filter_step(model, kind == "exclude", args, kwargs)
    if kind == "order_by":
        if kwargs or not all(_orderable(model, n) for n in args):
            return None
        return ("o", args)
    if kind == "select_related":
        if kwargs or not all(_related_path(model, n) for n in args):
            return None
        return ("r", args)  # () is select_related(): every non-null foreign key
    # __getitem__: only a slice comes back as a queryset
    if len(args) != 1 or kwargs or type(args[0]) is not slice:
        return None
    k = args[0]
    if k.step is not None or not all(v is None or type(v) is int for v in (k.start, k.stop)):
        return None
    return ("s", k.start, k.stop)


# -- reading --------------------------------------------------------------------------------------


def read(qs: QuerySet[Any], op: str, general: Callable[[], Any]) -> Any:
    """``count()``/``exists()``/iteration of ``qs``: from the memo's key when the chain is known,
    else ``general()`` (which the first read of a chain also learns from)."""
    if qs._result_cache is not None or not _worth_a_look(qs):
        return general()
    fetch = op in ("fetch", "get")
    if fetch and (qs._iterable_class is not ModelIterable or qs._fields is not None):
        return general()
    steps = _steps(qs)
    if steps is None or (fetch and not rebuild.supported(qs)):
        return general()
    return _read(qs, op, steps, (), general)


def aggregate(
    qs: QuerySet[Any], args: tuple[Any, ...], kwargs: dict[str, Any], general: Callable[[], Any]
) -> Any:
    """``aggregate(*args, **kwargs)`` of ``qs``: from the memo's key when the chain and the call
    are known (:mod:`freshcache.aggregates`), else ``general()``."""
    if not _worth_a_look(qs):
        return general()
    steps = _steps(qs)
    described = None if steps is None else aggregates.describe(qs.model, args, kwargs)
    if steps is None or described is None:
        return general()
    return _read(qs, "aggregate", steps, described, general)


def _worth_a_look(qs: QuerySet[Any]) -> bool:
    """Cheap checks first. A queryset with no record may still be a chain: one fresh from its
    manager (``Item.objects.count()``) is the empty chain, which :func:`_steps` checks."""
    model = qs.model
    return settings.ENABLED and model is not None and profile_for(model) is not None


def _read(
    qs: QuerySet[Any], op: str, steps: tuple[Any, ...], call: Hashable, general: Callable[[], Any]
) -> Any:
    if capture.active():
        return general()
    model = qs.model
    policy = policy_for(model, op, options_of(qs))
    if policy is None or policy[2]:  # process-local gets keep their own path
        return general()
    db = qs.db
    connection = connections[db]
    if tx.is_dirty(connection):
        return general()
    memo_key = (op, db, model, steps, call)
    entry = _memo.get(memo_key)
    if entry is not None and not entry.plan.current(db):
        entry = None  # learnt under another tenant's prefix: learn this one's
    if entry is None or verify:
        return _learn(qs, op, db, memo_key, entry, general)
    timeout = policy[0]
    probe = store.lookup(entry.key, entry.plan, timeout)
    if probe is not None and probe.data is not None:
        try:
            payload = rows_codec().loads(probe.data)
        except Exception as exc:  # a payload we cannot read is a miss, whatever the codec
            logger.warning("freshcache: payload at %s rejected (%s)", entry.key, exc)
        else:
            cache_read.send(sender=model, func=None, hit=True)
            return _finish(qs, op, entry, payload, connection, general)
    elif probe is not None and entry.statement is not None and not policy[1] and directmiss.ready():
        payload = directmiss.run(entry.statement, connection, entry.key, entry.plan, probe,
                                 timeout, model)  # fmt: skip
        return _finish(qs, op, entry, payload, connection, general)
    token = probed.set((entry.key, probe))
    try:
        return general()
    finally:
        probed.reset(token)


def _finish(
    qs: QuerySet[Any], op: str, entry: _Entry, payload: Any, connection: Any, general: Any
) -> Any:
    """The read's result from its rows as ``execute_sql`` returned them."""
    if op == "count":
        return 0 if payload is None else int(payload[0])
    if op == "exists":
        return bool(payload)
    if entry.finish is not None:
        return entry.finish(payload, connection)
    db = connection.alias
    if entry.layout is not None:
        qs._result_cache = rebuild.with_related(entry.layout, db, connection, payload, qs)
    else:
        qs._result_cache = rebuild.instances(qs.model, db, connection, payload, qs)
    return general()  # prefetches, if any


def _learn(
    qs: QuerySet[Any],
    op: str,
    db: str,
    memo_key: Hashable,
    known: _Entry | None,
    general: Callable[[], Any],
) -> Any:
    query = qs._query
    slot: list[Learned] = []
    token = learning.set(slot)
    try:
        result = general()
    finally:
        learning.reset(token)
    entry = _entry(slot, qs.model, op, db, query)
    if known is not None and entry is not None and entry != known:
        raise AssertionError(f"freshcache: chain {memo_key!r} named {known}, compiled {entry}")
    if entry is not None and known is None:
        if len(_memo) >= _MEMO_MAX:
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):  # a racing thread
                del _memo[next(iter(_memo))]
        _memo[memo_key] = entry
    return result


def _entry(slot: list[Learned], model: Any, op: str, db: str, query: Query) -> _Entry | None:
    if not slot:
        return None
    learned = slot[0]
    compiler = learned.compiler
    if compiler.connection.alias != db:
        return None
    plan, key = learned.plan, learned.key
    direct = directmiss.learn(compiler, learned.result_type, learned.sql, learned.params)
    if op == "aggregate":
        finish = aggregates.finisher_for(compiler)
        if learned.result_type != SINGLE or len(slot) != 1 or finish is None:
            return None
        return _Entry(plan, key, finish, statement=direct)
    if op in ("count", "exists"):
        ok = learned.result_type == SINGLE and len(slot) == 1
        return _Entry(plan, key, statement=direct) if ok else None
    if learned.result_type != MULTI or compiler.query is not query:
        return None
    if not query.select_related:
        ok = rebuild.default_rows(model, db, compiler)
        return _Entry(plan, key, statement=direct) if ok else None
    layout = rebuild.layout_of(model, compiler)
    return _Entry(plan, key, layout=layout, statement=direct) if layout is not None else None
