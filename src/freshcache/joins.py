"""A query's FROM clause as Django's compiler will build it: aliases, joins, nullability.

Dependency extraction reads a ``Query`` before it is compiled, so the joins Django only adds
while compiling (multi-table parents, ``select_related``, ordering across relations) are
rebuilt here the way the compiler does, reusing existing joins, so that every table the SQL
will read is known, with the join columns that carry equalities from one alias to another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.core.exceptions import FieldError
from django.db.models.fields.reverse_related import ForeignObjectRel
from django.db.models.sql.constants import LOUTER
from django.db.models.sql.datastructures import BaseTable, Join
from django.db.models.sql.query import Query

from freshcache.exceptions import UncacheableQuery
from freshcache.stamps import field_info

__all__ = ["Scope", "join_links", "nested_paths", "related_paths", "trim_path"]

_join_links: dict[int, tuple[Any, list[tuple[str, str, bool]]]] = {}


def _pairs(join_field: Any) -> Iterable[tuple[Any, Any]]:
    """(field on the parent alias, field on the joined alias) for a join, any Django version."""
    try:
        if hasattr(join_field, "get_joining_fields"):
            return join_field.get_joining_fields()
        if isinstance(join_field, ForeignObjectRel):
            return join_field.field.reverse_related_fields
        return join_field.related_fields
    except (AttributeError, FieldError, ValueError):
        return ()


def join_links(join_field: Any) -> list[tuple[str, str, bool]]:
    """(parent column, joined column, is text) of a join's exactly-comparable pairs, cached."""
    hit = _join_links.get(id(join_field))
    if hit is None or hit[0] is not join_field:
        links = []
        for left, right in _pairs(join_field):
            kind = field_info(left)[1]
            if kind is not None and kind is field_info(right)[1]:
                links.append((left.column, right.column, kind is str))
        hit = _join_links[id(join_field)] = (join_field, links)
    return hit[1]


class Scope:
    """One query's aliases: alias -> [table, parent alias, join field, nullable]."""

    __slots__ = ("aliases", "base", "joins", "query", "virtual")

    def __init__(self, query: Query, check: Callable[[object], None]) -> None:
        self.query = query
        self.aliases: dict[str, list[Any]] = {}
        self.joins: list[tuple[str, Any]] = []  # every real Join, for reuse
        self.virtual: dict[tuple[str, int], str] = {}
        self.base: str | None = None
        refcount = query.alias_refcount
        for alias, join in query.alias_map.items():
            if type(join) is not Join and type(join) is not BaseTable:
                check(join)
            if join.parent_alias is not None:
                self.joins.append((alias, join))
            elif self.base is None:
                self.base = alias
            if refcount.get(alias) or alias == self.base:
                self._add(alias, join)
        if self.base is None:  # nothing set up yet: Django will use the model's table
            self.base = query.get_meta().db_table
            self.aliases[self.base] = [self.base, None, None, False]

    def _add(self, alias: str, join: Any) -> None:
        parent, nullable = join.parent_alias, False
        if parent is not None:  # a join under an unreferenced join takes that one too
            if parent not in self.aliases:
                self._add(parent, self.query.alias_map[parent])
            nullable = join.join_type == LOUTER or self.aliases[parent][3]
        field = join.join_field if parent is not None else None
        self.aliases[alias] = [join.table_name, parent, field, nullable]

    def join(self, parent: str, info: Any) -> str:
        """The alias Django's compiler uses for ``info`` (a PathInfo) from ``parent``."""
        field, relation = info.join_field, info.filtered_relation
        for alias, join in reversed(self.joins):
            if (
                join.parent_alias == parent
                and join.join_field == field
                and join.filtered_relation == relation
            ):
                if alias not in self.aliases:
                    self._add(alias, join)
                return alias
        key = (parent, id(field))
        alias = self.virtual.get(key)
        if alias is None:
            alias = self.virtual[key] = f"~{len(self.virtual)}"
            self.aliases[alias] = [info.to_opts.db_table, parent, field, True]
        return alias

    def follow(self, alias: str, path: Iterable[Any]) -> str:
        for info in path:
            alias = self.join(alias, info)
        return alias

    def parents(self, alias: str, opts: Any) -> None:
        for parent in opts.get_parent_list():
            self.follow(alias, opts.get_path_to_parent(parent))

    def resolve(self, names: list[str], opts: Any) -> tuple[list[Any], Any, Any, list[str]]:
        try:
            path, field, targets, rest = self.query.names_to_path(names, opts, True, False)
        except (FieldError, ValueError) as exc:
            raise UncacheableQuery(f"cannot resolve {'__'.join(names)!r}: {exc}") from exc
        return path, field, targets, rest


def trim_path(path: list[Any], targets: Any) -> list[Any]:
    """Django's ``Query.trim_joins``: a trailing direct join whose target is already local."""
    path = list(path)
    while path:
        info = path[-1]
        if not info.direct or info.filtered_relation:
            break
        current = {t.column for t in targets}
        if not current <= {t.column for t in info.join_field.foreign_related_fields}:
            break
        targets = [a for a, b in info.join_field.related_fields if b.column in current]
        path.pop()
    return path


def nested_paths(spec: Any, prefix: tuple[str, ...] = ()) -> Iterator[list[str]]:
    for name, sub in (spec or {}).items():
        yield [*prefix, *name.split("__")]
        yield from nested_paths(sub, (*prefix, *name.split("__")))


def related_paths(
    opts: Any, max_depth: int, depth: int = 1, prefix: tuple[str, ...] = ()
) -> Iterator[list[str]]:
    """``select_related()`` without names: non-null forward relations, ``max_depth`` deep."""
    if depth > max_depth:
        return
    for field in opts.fields:
        remote = field.remote_field
        if remote is None or field.null or remote.parent_link:
            continue
        yield [*prefix, field.name]
        yield from related_paths(
            field.related_model._meta, max_depth, depth + 1, (*prefix, field.name)
        )
