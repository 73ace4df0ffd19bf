"""Which field paths a fast read may name by their text: Django's own fields, walked forward.

Chains (``filter``, ``order_by``, ``select_related``) and aggregate calls are remembered by the
names they were given, so a name must mean what the SQL compiler will make of it. That holds for
Django's own field classes, whose SQL and values we know; a third-party field may compile or
prepare its values any way it likes. Fields whose prepared values can depend on the time zone in
force are left out of value comparisons as well.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models.constants import LOOKUP_SEP

from freshcache.memo import Memo

__all__ = ["TEMPORAL", "django_field", "forward_path"]

#: Fields whose values can depend on the time zone in force: chains and aggregates skip them.
TEMPORAL = frozenset({"DateField", "DateTimeField", "TimeField", "DurationField", "JSONField"})

_forward: Memo[tuple[Any, str], tuple[Any, ...] | None] = Memo()


def django_field(field: Any) -> bool:
    """Whether ``field`` is one of Django's own field classes (whose SQL and values we know)."""
    return type(field).__module__.startswith("django.db.models.fields")


def forward_path(model: Any, name: str) -> tuple[Any, ...] | None:
    """The fields ``name`` walks from ``model`` (``"category__title"``, ``"pk"``), when each is
    one of Django's own concrete, non-many-to-many fields and each but the last is a relation;
    else None. Remembered per model and name (bounded: names can come from user input)."""
    key = (model, name)
    try:
        return _forward[key]
    except KeyError:
        return _forward.put(key, _walk(model, name))


def _walk(model: Any, name: str) -> tuple[Any, ...] | None:
    opts = model._meta
    fields: list[Any] = []
    for part in name.split(LOOKUP_SEP):
        if fields:
            previous = fields[-1]
            if not previous.is_relation or previous.related_model is None:
                return None
            opts = previous.related_model._meta
        try:
            field = opts.pk if part == "pk" else opts.get_field(part)
        except FieldDoesNotExist:
            return None
        if not getattr(field, "concrete", False) or field.many_to_many or not django_field(field):
            return None
        fields.append(field)
    return tuple(fields)
