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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Model
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init
from django.db.models.sql.query import Query

from freshcache.conf import on_reset

__all__ = ["Rebuild", "instances", "learn", "rebuild_for", "remember", "supported"]


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
    expressions = [s[0] for s in select[: compiler.col_count]]
    converters = tuple(
        (pos, tuple(convs), expression)
        for pos, (convs, expression) in compiler.get_converters(expressions).items()
    )
    rebuild = Rebuild(init_list, converters)
    with _lock:
        _rebuilds[(model, db)] = rebuild
    return rebuild


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
    from django.db.models import query as django_query

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
    converters = recipe.converters
    if converters:
        converted: list[Sequence[Any]] = []
        for raw in rows:
            row = list(raw)
            for pos, convs, expression in converters:
                value = row[pos]
                for convert in convs:
                    value = convert(value, expression, connection)
                row[pos] = value
            converted.append(row)
        rows = converted
    mode = getattr(qs, "_fetch_mode", None)
    names = _plain_init(model)
    if (
        names is None
        or names != recipe.init_list
        or pre_init.has_listeners(model)
        or post_init.has_listeners(model)
    ):
        build = _from_db(model, mode)
        init_list = recipe.init_list
        return [build(db, init_list, row) for row in rows]
    out = []
    new = model.__new__
    for values in rows:
        obj = new(model)
        state = ModelState()
        state.adding = False
        state.db = db
        if mode is not None:
            state.fetch_mode = mode
        obj._state = state
        obj.__dict__.update(zip(names, values, strict=True))
        out.append(obj)
    return out
