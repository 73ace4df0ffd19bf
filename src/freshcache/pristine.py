"""Which querysets are a fresh ``Model.objects`` query, so that a read of a known shape may
skip ``filter()`` and the SQL compiler (:mod:`freshcache.fastget`, :mod:`freshcache.chains`).

A model's pristine ``Query`` state is taken once; a queryset qualifies when its query has that
very state (an attribute a clone sets to its class default counts as unset) and its class
inherits the methods the read goes through from Django untouched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.db.models.sql.query import Query

from freshcache.conf import on_reset

__all__ = ["django_exact", "overrides_none", "pristine", "shape_of"]

#: Query attributes a pristine query may differ in: a cached property and our own options.
_IGNORED = frozenset({"base_table", "_freshcache_options"})
_MISSING = object()


@dataclass(frozen=True)
class Shape:
    """What is fixed per model: the pristine query's state and the lookups that qualify."""

    baseline: tuple[tuple[str, object], ...]
    names: frozenset[str]
    n_attrs: int
    fields: dict[str, Any]
    table: str
    columns: str


_shapes: dict[type, Shape | None] = {}
_qs_classes: dict[tuple[type, tuple[str, ...]], bool] = {}
_lock = threading.Lock()


@on_reset
def _forget() -> None:
    with _lock:
        _shapes.clear()


def shape_of(model: type) -> Shape | None:
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
        shape = Shape(
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


def django_exact(field: Any) -> bool:
    """Whether ``field__exact`` is Django's own lookup (a registered one may compare otherwise)."""
    lookup = field.get_lookup("exact")
    return lookup is not None and lookup.__module__.startswith("django.")


def pristine(query: Query, shape: Shape) -> bool:
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
