"""Raw rows back into model instances, the way Django's ``ModelIterable`` builds them.

Fast reads (:mod:`freshcache.fastget`, :mod:`freshcache.chains`) skip the SQL compiler, and with
it what the iterable learns from the compiler: the converters each column needs and the init
list ``from_db`` takes. For a model's default columns both depend only on the model and the
database, so they are taken once from a compiled ``Query(model)`` and reused; the rows passed in
are the raw database rows the general read path caches, so converting them here gives exactly the
values a compiled read would.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model
from django.db.models import query as django_query
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init
from django.db.models.sql.query import Query

from freshcache.conf import on_reset
from freshcache.memo import Memo

__all__ = [
    "Layout",
    "Rebuild",
    "default_rows",
    "instances",
    "layout_of",
    "learn",
    "rebuild_for",
    "remember",
    "supported",
    "with_related",
]


@dataclass(frozen=True)
class Rebuild:
    """How raw rows become instances on one database: the ORM's converters and init list."""

    init_list: tuple[str, ...]
    converters: tuple[tuple[int, tuple[Any, ...], Any], ...]


_rebuilds: dict[tuple[type, str], Rebuild] = {}
_lock = threading.Lock()


@on_reset
def _forget() -> None:
    with _lock:
        _rebuilds.clear()
        _plain_inits.clear()


def remember(model: Any, db: str, compiler: Any) -> Rebuild:
    """Record the recipe from a compiler that selected ``model``'s default columns."""
    select = compiler.select
    fields = compiler.klass_info["select_fields"]
    start, end = fields[0], fields[-1] + 1
    init_list = tuple(s[0].target.attname for s in select[start:end])
    rebuild = Rebuild(init_list, _converters_of(compiler))
    with _lock:
        _rebuilds[(model, db)] = rebuild
    return rebuild


def _converters_of(compiler: Any) -> tuple[tuple[int, tuple[Any, ...], Any], ...]:
    """The converters Django's ``results_iter`` applies to the compiled read's columns."""
    expressions = [s[0] for s in compiler.select[: compiler.col_count]]
    return tuple(
        (pos, tuple(convs), expression)
        for pos, (convs, expression) in compiler.get_converters(expressions).items()
    )


def learn(model: Any, db: str, compiler: Any) -> None:
    """:func:`remember`, unless the recipe for ``model`` on ``db`` is already known."""
    if (model, db) not in _rebuilds:
        remember(model, db, compiler)


def rebuild_for(model: Any, db: str) -> Rebuild:
    rebuild = _rebuilds.get((model, db))
    if rebuild is None:
        compiler = Query(model).get_compiler(using=db)
        compiler.setup_query()
        rebuild = remember(model, db, compiler)
    return rebuild


def supported(qs: Any) -> bool:
    """False when the queryset asks for something only its iterable does (Django 6.1's
    peer-tracking fetch modes)."""
    mode = getattr(qs, "_fetch_mode", None)
    return mode is None or not mode.track_peers


def _from_db(model: Any, mode: Any) -> Callable[..., Any]:
    if mode is None:  # Django before 6.1
        return model.from_db
    return django_query._get_from_db(model, mode)


def _plain_init(model: Any) -> tuple[str, ...] | None:
    """The attnames ``Model.__init__`` would set one by one, when doing so is exactly writing
    them to the instance's ``__dict__``: Django's own ``__init__`` and ``from_db`` (nothing in
    the MRO overrides them, nothing after ``Model`` defines ``__init__``) and, for every column,
    Django's plain deferred-attribute descriptor (a foreign key's only clears a cached related
    object, which a new instance has not)."""
    try:
        return _plain_inits[model]
    except KeyError:
        pass
    names: tuple[str, ...] | None = tuple(f.attname for f in model._meta.concrete_fields)
    mro = model.__mro__
    after = mro[mro.index(Model) + 1 :] if Model in mro else ()
    if (
        model.__init__ is not Model.__init__
        or getattr(model.from_db, "__func__", None) is not Model.from_db.__func__
        or model._meta.abstract
        or any("__init__" in vars(k) for k in after if k is not object)
        or not all(type(inspect.getattr_static(model, n, None)) in _PLAIN for n in names or ())
    ):
        names = None
    _plain_inits[model] = names
    return names


_PLAIN = (DeferredAttribute, ForeignKeyDeferredAttribute)
_plain_inits: dict[type, tuple[str, ...] | None] = {}


def instances(
    model: Any, db: str, connection: Any, rows: Sequence[Sequence[Any]], qs: Any = None
) -> list[Any]:
    """Instances of ``model`` from raw rows of its default columns on ``db``, as the queryset's
    iterable would build them (``from_db`` and the model's ``__init__``, or the equivalent
    ``__dict__`` writes when :func:`_plain_init` allows and no init signal is connected)."""
    recipe = rebuild_for(model, db)
    rows = _converted(rows, recipe.converters, connection)
    build = _builder(model, recipe.init_list, db, getattr(qs, "_fetch_mode", None))
    return [build(row) for row in rows]


def got(model: Any, qs: Any, db: str, connection: Any, rows: Sequence[Sequence[Any]]) -> Any:
    """What ``qs.get()`` answers for the raw ``rows`` its query read: the instance, or the
    error Django raises, with Django's own messages."""
    num = len(rows)
    if num == 1:
        return instances(model, db, connection, rows, qs)[0]
    name = model._meta.object_name
    if not num:
        raise model.DoesNotExist(f"{name} matching query does not exist.")
    shown = (
        num
        if num < django_query.MAX_GET_RESULTS
        else f"more than {django_query.MAX_GET_RESULTS - 1}"
    )
    raise model.MultipleObjectsReturned(
        f"get() returned more than one {name} -- it returned {shown}!"
    )


def _builder(
    model: Any, init_list: tuple[str, ...], db: str, mode: Any
) -> Callable[[Sequence[Any]], Any]:
    """What makes one instance from its values: ``from_db`` (with the model's ``__init__``),
    or the equivalent ``__dict__`` writes when :func:`_plain_init` allows and no init signal is
    connected."""
    names = _plain_init(model)
    if (
        names is None
        or names != init_list
        or pre_init.has_listeners(model)
        or post_init.has_listeners(model)
    ):
        from_db = _from_db(model, mode)
        return lambda values: from_db(db, init_list, values)
    new = model.__new__

    def build(values: Sequence[Any]) -> Any:
        obj = new(model)
        state = ModelState()
        state.adding = False
        state.db = db
        if mode is not None:
            state.fetch_mode = mode
        obj._state = state
        obj.__dict__.update(zip(names, values, strict=True))
        return obj

    return build


def _converted(
    rows: Sequence[Sequence[Any]],
    converters: tuple[tuple[int, tuple[Any, ...], Any], ...],
    connection: Any,
) -> Sequence[Sequence[Any]]:
    if not converters:
        return rows
    converted: list[Sequence[Any]] = []
    for raw in rows:
        row = list(raw)
        for pos, convs, expression in converters:
            value = row[pos]
            for convert in convs:
                value = convert(value, expression, connection)
            row[pos] = value
        converted.append(row)
    return converted


# -- select_related ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each model of a ``select_related()`` fetch sits in its rows, as Django's compiler
    laid them out (``select`` and ``klass_info``), and the columns' converters."""

    model: Any
    #: The model's own columns, which come first in each row.
    init_list: tuple[str, ...]
    select: tuple[Any, ...]
    klass_info: dict[str, Any]
    converters: tuple[tuple[int, tuple[Any, ...], Any], ...]
    #: Django's related populators by (database, fetch mode): stateless once built.
    populators: dict[tuple[str, Any], list[Any]] = field(default_factory=dict, compare=False)


#: Layouts by what determines them, so the chains that share one share the object.
_layouts: Memo[Hashable, Layout] = Memo(256)


def _klass_signature(info: dict[str, Any]) -> Hashable:
    return (
        info["model"],
        info.get("field"),
        info.get("reverse"),
        info.get("from_parent"),
        tuple(info["select_fields"]),
        tuple(_klass_signature(child) for child in info.get("related_klass_infos", ())),
    )


def layout_of(model: Any, compiler: Any) -> Layout | None:
    """The layout of a compiled ``select_related()`` fetch of ``model``'s default columns plus
    related models' (no annotations, extra columns or deferred fields), else None."""
    info = compiler.klass_info
    select = compiler.select
    count = compiler.col_count
    if (
        not info
        or info.get("model") is not model
        or not info.get("related_klass_infos")
        or compiler.annotation_col_map
        or getattr(compiler, "has_extra_select", False)
        or count != len(select)
    ):
        return None
    fields = list(info["select_fields"])
    names = tuple(s[0].target.attname for s in select[: len(fields)])
    if fields != list(range(len(fields))) or names != tuple(
        f.attname for f in model._meta.concrete_fields
    ):
        return None
    columns = tuple((s[0].target.model, s[0].target.attname) for s in select)
    signature = (model, compiler.connection.alias, columns, _klass_signature(info))
    known = _layouts.get(signature)
    if known is not None:
        return known
    layout = Layout(model, names, tuple(select), info, _converters_of(compiler))
    return _layouts.put(signature, layout)


def with_related(
    layout: Layout, db: str, connection: Any, rows: Sequence[Sequence[Any]], qs: Any
) -> list[Any]:
    """Instances with their ``select_related()`` objects from raw rows laid out as ``layout``
    says, built as Django's ``ModelIterable`` builds them."""
    rows = _converted(rows, layout.converters, connection)
    mode = getattr(qs, "_fetch_mode", None)
    populators = layout.populators.get((db, mode))
    if populators is None:
        args = (layout.klass_info, list(layout.select), db)
        populators = django_query.get_related_populators(*args, *(() if mode is None else (mode,)))
        layout.populators[(db, mode)] = populators
    build = _builder(layout.model, layout.init_list, db, mode)
    end = len(layout.init_list)
    out = []
    for row in rows:
        obj = build(row[:end])
        for populator in populators:
            populator.populate(row, obj)
        out.append(obj)
    return out


def default_rows(model: Any, db: str, compiler: Any) -> bool:
    """Whether the compiled fetch selected exactly the model's default columns, in the order the
    rebuild recipe expects (no related objects, annotations or extra columns)."""
    info = compiler.klass_info
    if (
        not info
        or info.get("model") is not model
        or info.get("related_klass_infos")
        or compiler.annotation_col_map
        or getattr(compiler, "has_extra_select", False)
    ):
        return False
    fields = list(info["select_fields"])
    if fields != list(range(compiler.col_count)):
        return False
    recipe = rebuild_for(model, db)
    names = tuple(s[0].target.attname for s in compiler.select[: compiler.col_count])
    return names == recipe.init_list
