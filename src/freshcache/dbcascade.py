"""Rows the database deletes or changes by itself: Django 6.1's database-level ``on_delete``.

With ``on_delete=DB_CASCADE``, ``DB_SET_NULL`` or ``DB_SET_DEFAULT`` the foreign key constraint
does the work when a referenced row is deleted: Django sends no statement for the referencing
rows, so no compiler hook sees them change. A delete from a table therefore also invalidates every
table such a constraint may delete from or update, whole (which of their rows it touches is not
known without reading them), and through ``DB_CASCADE`` the tables below those in turn.

The graph comes from the installed models' own fields; a constraint created outside Django's
models (hand-written SQL, a trigger) is not visible here, as the docs say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.db.models.signals import class_prepared

try:  # Django 6.1+
    from django.db.models.deletion import DatabaseOnDelete
except ImportError:  # pragma: no cover - depends on the installed Django
    DatabaseOnDelete = None

__all__ = ["tables_below"]

#: table -> [(referencing table, whether its rows are deleted too)]; None until first needed.
_edges: dict[str, list[tuple[str, bool]]] | None = None
_below: dict[str, tuple[str, ...]] = {}


def _forget(**kwargs: Any) -> None:
    """A model class appeared: its fields may add relations."""
    global _edges
    _edges = None
    _below.clear()


class_prepared.connect(_forget, dispatch_uid="freshcache.dbcascade")


def _graph() -> dict[str, list[tuple[str, bool]]]:
    global _edges
    if _edges is None:
        edges: dict[str, list[tuple[str, bool]]] = {}
        if DatabaseOnDelete is not None:
            for model in apps.get_models(include_auto_created=True):
                for field in model._meta.local_fields:
                    rel = field.remote_field
                    on_delete = getattr(rel, "on_delete", None)
                    if not isinstance(on_delete, DatabaseOnDelete) or isinstance(rel.model, str):
                        continue
                    parent = rel.model._meta.concrete_model._meta.db_table
                    deletes = on_delete.operation == "CASCADE"
                    edges.setdefault(parent, []).append((model._meta.db_table, deletes))
        _edges = edges
    return _edges


def tables_below(tables: Iterable[str]) -> tuple[str, ...]:
    """The tables whose rows the database may delete or update when rows of ``tables`` are
    deleted, a table itself included when it references itself that way; empty (and cheap)
    when no installed model uses a database-level ``on_delete``."""
    found: dict[str, None] = {}
    for table in tables:
        below = _below.get(table)
        if below is None:
            below = _below[table] = _walk(table)
        found.update(dict.fromkeys(below))
    return tuple(found)


def _walk(table: str) -> tuple[str, ...]:
    graph = _graph()
    seen: dict[str, None] = {}
    todo = [table]
    while todo:
        for child, deletes in graph.get(todo.pop(), ()):
            if child in seen:
                continue
            seen[child] = None
            if deletes:
                todo.append(child)
    return tuple(seen)
