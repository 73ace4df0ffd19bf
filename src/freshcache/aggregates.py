"""``aggregate()`` calls a chain read may serve, and how their cached row becomes the result.

Django builds an aggregation query anew on every ``aggregate()`` call: it resolves each
expression against a cloned query, decides whether a subquery is needed and compiles the SQL.
On a cache hit all of that only reproduces a key already known, and it costs more than the rest
of the hit together. :mod:`freshcache.chains` therefore remembers, per recorded chain and per
*description* of the call, the key the general path computed, plus what Django does with the
row it reads: the aliases, the expressions as resolved (their converters turn the driver's
values into the field's types) and the values of an empty result.

Only calls a description names completely are described: Django's own ``Sum``, ``Count``,
``Avg``, ``Min`` and ``Max`` (not subclasses), over one field path of Django's own concrete,
non-temporal fields through forward relations (or ``Count("*")``), with ``distinct`` and
nothing else: no ``filter``, ``default``, ``order_by``, ``output_field`` or extra template
arguments. Anything else, including everything Django would reject, takes the general path.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Avg, Count, F, Max, Min, Sum
from django.db.models.expressions import Star

from freshcache import fieldpaths

__all__ = ["Finisher", "describe", "finisher_for"]

_CLASSES = {cls: cls.__name__ for cls in (Sum, Count, Avg, Min, Max)}


def _plain_path(model: Any, name: str) -> bool:
    """Whether ``name`` walks Django's own concrete fields, forward, to a non-temporal one."""
    fields = fieldpaths.forward_path(model, name)
    return fields is not None and fields[-1].get_internal_type() not in fieldpaths.TEMPORAL


def _one(model: Any, aggregate: object) -> Hashable | None:
    name = _CLASSES.get(type(aggregate))
    if name is None:
        return None
    agg: Any = aggregate
    if (
        agg.filter is not None
        or agg.default is not None
        or getattr(agg, "order_by", None) is not None
        or agg.extra
        or "output_field" in vars(agg)
        or type(agg.distinct) is not bool
        or len(agg.source_expressions) != 1
    ):
        return None
    source = agg.source_expressions[0]
    if type(source) is Star:
        return (name, "*", agg.distinct)
    if type(source) is not F or type(source.name) is not str:
        return None
    if not _plain_path(model, source.name):
        return None
    return (name, source.name, agg.distinct)


def describe(model: Any, args: Sequence[object], kwargs: Mapping[str, object]) -> Hashable | None:
    """A hashable name for ``aggregate(*args, **kwargs)`` on ``model``, or None when the call is
    not one of the plain shapes (see the module)."""
    merged: dict[str, object] = dict(kwargs)
    for arg in args:
        try:
            alias = arg.default_alias  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return None  # Django's own call raises the error the user should see
        merged[alias] = arg
    if not merged:
        return None
    parts = []
    for alias, aggregate in merged.items():
        if type(alias) is not str:
            return None
        one = _one(model, aggregate)
        if one is None:
            return None
        parts.append((alias, one))
    return tuple(parts)


@dataclass(frozen=True)
class Finisher:
    """Turns the cached row of a described call into the dictionary Django would return."""

    aliases: tuple[str, ...]
    expressions: tuple[Any, ...]
    empty: tuple[Any, ...]

    def __call__(self, row: Sequence[Any] | None, connection: Any) -> dict[str, Any]:
        if row is None:
            return dict(zip(self.aliases, self.empty, strict=True))
        values = list(row[: len(self.aliases)])
        for i, expression in enumerate(self.expressions):
            # Built with this thread's connection each time, as Django's compiler builds them.
            converters = [
                *connection.ops.get_db_converters(expression),
                *expression.get_db_converters(connection),
            ]
            for convert in converters:
                values[i] = convert(values[i], expression, connection)
        return dict(zip(self.aliases, values, strict=True))


def finisher_for(compiler: Any) -> Finisher | None:
    """What the general path's aggregation compiler would do with its row, or None when it is
    not a plain one-row aggregation of the expected width."""
    query = compiler.query
    selected = query.annotation_select
    expressions = tuple(selected.values())
    if not expressions or compiler.col_count != len(expressions):
        return None
    if hasattr(compiler, "has_composite_fields") and compiler.has_composite_fields(expressions):
        return None
    return Finisher(
        aliases=tuple(selected),
        expressions=expressions,
        empty=tuple(e.empty_result_set_value for e in expressions),
    )
