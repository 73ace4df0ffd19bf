"""What a query's result depends on: per table, a disjunction of conjunctions of column equalities.

A dependency ``{"blog_post": {(("category_id", 3), ("published", True)), ()}}`` reads "any row of
``blog_post`` with ``category_id = 3 AND published``, or (``()``) any row at all". The one rule:
**a dependency may be coarser than the truth, never narrower.** A row write that can change a
query's result matches, with its old or its new values, one conjunction of that table. So every
doubt resolves towards a shorter conjunction (ultimately ``()``) or towards
:class:`~freshcache.exceptions.UncacheableQuery`.

How a :class:`~django.db.models.sql.Query` is read, in one pass without copying it:

* ``query.where`` becomes a DNF. Atoms are ``Exact``, ``In`` (one disjunct per value; more than
  ``max_in`` values drop the atom) and ``IsNull(True)`` (value ``None``) and their ``Related*``
  twins, with a plain ``Col`` as lhs and a literal rhs. Every other condition is dropped (it
  becomes "true"); subqueries inside it still count. A negated node is dropped whole.
  ``NothingNode`` and an empty ``IN`` are "false": the disjunct disappears, and a WHERE that is
  always false reads no row. XOR is treated as OR (an odd count of true children needs one).
  Past ``max_conjs`` disjuncts, a node keeps only the atoms all its disjuncts share.
* Only exactly-comparable columns make atoms, because a stamp key compares values in Python while
  the database compares them in SQL: Django's own integer, boolean, text, float, decimal, date,
  time, datetime and UUID fields (also behind a foreign key), no ``db_collation``, no overridden
  ``db_type``/``get_db_prep_value``. Text counts only on sqlite and PostgreSQL, whose default
  comparison is exact (MySQL collations ignore case, Oracle reads ``''`` as NULL): on the
  database ``using`` names, or on every configured one. Decimals with more places than the
  column keeps, or over 15 significant digits (sqlite keeps REALs), drop.
* The rhs is prepped once more through the column's field, exactly as :func:`row_conj_values`
  preps the write side (``get_prep_value`` is idempotent; an unprepped rhs would not match).
* Each alias in FROM (refcount > 0, and the base table) gets, per disjunct, the atoms on its
  columns, plus the values that join equalities carry over from other aliases (only between
  columns of the same kind, never ``None``; conflicting values carry nothing). An ``IS NULL`` on a
  LEFT OUTER joined alias (or below one) is dropped: a missing row is what makes it true.
* Joins Django only makes when compiling are rebuilt from the model: parents of a multi-table
  child (default columns), ``select_related``, ``order_by`` and ``Meta.ordering`` (including a
  related model's ordering), ``distinct(*fields)``. Existing joins are reused as Django does.
* Subqueries (``__in=qs``, ``Exists``, ``Subquery``, in filters, annotations, ordering, joins'
  ``FilteredRelation``), unions and ``count()``'s inner query add their own dependencies; a
  condition correlated by ``OuterRef`` is an expression rhs and drops.

Uncacheable, with the reason: ``extra()`` (raw SQL on any table; only ``select={...:
'"table"."column"'}`` passes, which Django's own m2m ``prefetch_related`` uses to read a table it
joins anyway), ``RawSQL``/``ExtraWhere``
(same), ``order_by("?")``/``Random``, ``Now``, ``UUID4``/``UUID7``, ``RandomUUID``,
``TransactionNow`` (each run differs), any expression, lookup, transform, aggregate, join or
where-node class defined outside ``django`` (its SQL may read anything; ``.nocache()`` it), a bare
``Func``/``Aggregate`` or any expression given ``function=``/``template=`` (raw SQL by another
name), ``select_for_update()`` (a locking read must reach the database), ``RawQuery`` and write
queries (not reads).
Stamp values and keys are :mod:`freshcache.stamps`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from collections.abc import Hashable
from typing import Any

from django.db import connections
from django.db.models import Q, QuerySet, lookups
from django.db.models.aggregates import Aggregate
from django.db.models.expressions import Col, F, Func
from django.db.models.fields.related_lookups import RelatedExact, RelatedIn, RelatedIsNull
from django.db.models.lookups import Exact, In, IsNull, Lookup, Transform
from django.db.models.sql.query import Query
from django.db.models.sql.subqueries import DeleteQuery, InsertQuery, UpdateQuery
from django.db.models.sql.where import AND, NothingNode, WhereNode

from freshcache.exceptions import UncacheableQuery
from freshcache.joins import Scope, join_links, nested_paths, related_paths, trim_path
from freshcache.stamps import UNKNOWN, Conj, column_value, field_info

__all__ = [
    "Deps",
    "instance_dependencies",
    "merge",
    "model_dependencies",
    "query_dependencies",
    "text_exact",
]

Deps = dict[str, frozenset[Conj]]
Disjunct = dict[tuple[str, str], Hashable]  # (alias, column) -> value; None is IS NULL


_ALL: frozenset[Conj] = frozenset({()})
_EQ = (Exact, RelatedExact, getattr(lookups, "IntegerFieldExact", Exact))  # the last: Django 5+
_IN = (In, RelatedIn)
_ISNULL = (IsNull, RelatedIsNull)
_ATOMS = frozenset(_EQ + _IN + _ISNULL)
_EXACT_TEXT_VENDORS = frozenset({"sqlite", "postgresql"})
_FORBIDDEN = {
    "django.db.models.expressions.RawSQL": "RawSQL is opaque SQL",
    "django.db.models.sql.where.ExtraWhere": "extra(where=...) is opaque SQL",
    "django.db.models.functions.math.Random": "random ordering or values",
    "django.db.models.functions.datetime.Now": "Now() changes every call",
    "django.db.models.functions.uuid.UUID4": "UUID4() changes every call",
    "django.db.models.functions.uuid.UUID7": "UUID7() changes every call",
    "django.contrib.postgres.functions.RandomUUID": "RandomUUID() changes every call",
    "django.contrib.postgres.functions.TransactionNow": "TransactionNow() changes every call",
}
_SCALARS = frozenset({str, int, float, bool, bytes, decimal.Decimal, dt.datetime, dt.date,
                      dt.time, dt.timedelta, uuid.UUID, type(None)})  # fmt: skip
_COLUMN_REF = re.compile(r'([`"]?)\w+\1\.([`"]?)\w+\2')
_verdicts: dict[type, str | None] = {}
_exact_text: dict[str | None, bool] = {}  # database alias -> text equality is exact there


def _raw_select(item: tuple[str, Any]) -> bool:
    """False for ``"table"."column"`` with no params: m2m ``prefetch_related`` selects the
    through table's column that way, and it only reads a table the query joins anyway."""
    sql, params = item
    return bool(params) or not _COLUMN_REF.fullmatch(sql)


def _check(node: object) -> None:
    """Raise ``UncacheableQuery`` if ``node``'s SQL cannot be reasoned about."""
    cls = type(node)
    try:
        verdict = _verdicts[cls]
    except KeyError:
        verdict = None
        if cls.__module__.split(".", 1)[0] != "django":
            verdict = f"{cls.__module__}.{cls.__qualname__} is not Django's: its SQL is opaque"
        elif cls in (Func, Aggregate, Transform):
            verdict = f"a bare {cls.__name__}(function=...) runs any SQL function"
        else:
            for c in cls.__mro__:
                verdict = _FORBIDDEN.get(f"{c.__module__}.{c.__qualname__}", verdict)
        _verdicts[cls] = verdict
    if verdict is None:
        extra = getattr(node, "extra", None)
        if type(extra) is dict and ("template" in extra or "function" in extra):
            verdict = f"{cls.__name__} given its own SQL template or function"
    if verdict is not None:
        raise UncacheableQuery(verdict)


class _Walker:
    def __init__(self, max_in: int, max_conjs: int, text_exact: bool) -> None:
        self.max_in = max_in
        self.max_conjs = max_conjs
        self.text_exact = text_exact
        self.tables: dict[str, set[Conj]] = {}

    # -- one query -----------------------------------------------------------------------------
    def query(self, q: Query) -> None:
        if not isinstance(q, Query):
            raise UncacheableQuery(f"{type(q).__name__} is not an ORM query (raw SQL)")
        if isinstance(q, (UpdateQuery, DeleteQuery, InsertQuery)):
            raise UncacheableQuery(f"{type(q).__name__} is a write")
        _check(q)
        if q.extra_tables or q.extra_order_by or any(map(_raw_select, q.extra.values())):
            raise UncacheableQuery("extra() adds raw SQL")
        if q.select_for_update:
            raise UncacheableQuery("select_for_update() must lock rows in the database")
        inner = getattr(q, "inner_query", None)
        if inner is not None or q.combinator:
            for part in (inner,) if inner is not None else q.combined_queries:
                self.query(part)
            if "?" in q.order_by:
                raise UncacheableQuery("order_by('?') is random")
            self.walk((list(q.annotations.values()), q.order_by))
            return
        scope = Scope(q, _check)
        dnf = self.where(q.where)
        for _, join in scope.joins:
            if join.filtered_relation is not None:
                fr = join.filtered_relation
                self.walk((fr.condition, getattr(fr, "resolved_condition", None)))
        selected = getattr(q, "selected", None)
        self.walk((list(q.annotations.values()), q.select, q.group_by))
        if type(selected) is dict:
            self.walk(list(selected.values()))
        self.compile_time_joins(scope)
        self.emit(scope, dnf)

    def compile_time_joins(self, scope: Scope) -> None:
        q, base, opts = scope.query, scope.base, scope.query.get_meta()
        assert base is not None
        if q.default_cols:
            scope.parents(base, opts)
        related = q.select_related
        for names in related_paths(opts, q.max_depth) if related is True else nested_paths(related):
            alias = base
            for info in scope.resolve(names, opts)[0]:
                alias = scope.join(alias, info)
                scope.parents(alias, info.to_opts)
        for name in q.distinct_fields:
            if name not in q.annotations:
                path, _, targets, _ = scope.resolve(name.split("__"), opts)
                scope.follow(base, trim_path(path, targets))
        ordering = q.order_by or (opts.ordering if q.default_ordering else ())
        for item in ordering:
            self.order_item(scope, item, base, opts, set(), top=True)

    def order_item(
        self, scope: Scope, item: Any, alias: str, opts: Any, seen: set[Any], top: bool
    ) -> None:
        annotations = scope.query.annotations
        if not isinstance(item, str):
            paths: list[str] = []
            self.walk(item, paths)
            for name in paths:
                if not (top and name in annotations):
                    path, _, targets, _ = scope.resolve(name.split("__"), opts)
                    scope.follow(alias, trim_path(path, targets))
            return
        if item == "?":
            raise UncacheableQuery("order_by('?') is random")
        name = item[1:] if item[:1] == "-" else item
        if top and name in annotations:
            return
        pieces = name.split("__")
        path, field, targets, rest = scope.resolve(pieces, opts)
        target_opts = path[-1].to_opts if path else opts
        if (
            field.is_relation
            and target_opts.ordering
            and getattr(field, "attname", None) != pieces[-1]
            and name != "pk"
            and not rest
        ):
            joined = scope.follow(alias, path)
            if (joined, name) in seen:
                raise UncacheableQuery(f"infinite ordering loop through {name!r}")
            seen.add((joined, name))
            for sub in target_opts.ordering:
                self.order_item(scope, sub, joined, target_opts, seen, top=False)
        else:
            scope.follow(alias, trim_path(path, targets))

    # -- WHERE as a DNF ------------------------------------------------------------------------
    def where(self, node: Any) -> list[Disjunct]:
        if isinstance(node, WhereNode):
            _check(node)
            if node.negated:
                self.walk(node.children)
                return [{}]
            if node.connector == AND:
                result: list[Disjunct] = [{}]
                for child in node.children:
                    result = self.cap(_product(result, self.where(child)))
                return result
            union: dict[frozenset[Any], Disjunct] = {}
            for child in node.children:
                for d in self.where(child):
                    union.setdefault(frozenset(d.items()), d)
            return [{}] if frozenset() in union else self.cap(list(union.values()))
        if isinstance(node, Lookup):
            return self.lookup(node)
        if type(node) is NothingNode:
            return []
        self.walk(node)
        return [{}]

    def lookup(self, node: Lookup) -> list[Disjunct]:
        _check(node)
        lhs, rhs = node.lhs, node.rhs
        if type(lhs) is Col and type(node) in _ATOMS and lhs.alias and lhs.target.column:
            field, kind, _ = field_info(lhs.target)
            key = (lhs.alias, lhs.target.column)
            if kind is str and not self.text_exact:
                kind = None
            if kind is None:
                pass
            elif isinstance(node, _ISNULL):
                return [{key: None}] if rhs is True else [{}]
            elif isinstance(node, _EQ) and not hasattr(rhs, "resolve_expression"):
                value = column_value(field, rhs)
                if value is not None and value is not UNKNOWN:
                    return [{key: value}]
            elif isinstance(node, _IN) and not hasattr(rhs, "resolve_expression"):
                values: set[Hashable] = set()
                for v in rhs:  # NULL never matches IN; an expression or odd value drops it all
                    value = UNKNOWN if hasattr(v, "resolve_expression") else column_value(field, v)
                    if value is UNKNOWN or len(values) >= self.max_in:
                        break
                    if value is not None:
                        values.add(value)
                else:
                    return self.cap([{key: v} for v in values])
        self.walk((lhs, rhs))
        return [{}]

    def cap(self, dnf: list[Disjunct]) -> list[Disjunct]:
        """Past ``max_conjs`` disjuncts keep the atoms they all share: implied by each."""
        if len(dnf) <= self.max_conjs:
            return dnf
        common = set(dnf[0].items()).intersection(*(d.items() for d in dnf[1:]))
        return [dict(common)]

    # -- everything else: checks and subqueries ------------------------------------------------
    def walk(self, node: Any, paths: list[str] | None = None) -> None:
        if type(node) in _SCALARS:
            return
        if isinstance(node, Query):
            self.query(node)
        elif isinstance(node, QuerySet):
            self.query(node.query)
        elif isinstance(node, (list, tuple, set, frozenset, dict)):
            for child in node.values() if isinstance(node, dict) else node:
                self.walk(child, paths)
        elif isinstance(node, Q):
            for child in node.children:
                self.walk(child[1] if isinstance(child, tuple) else child, paths)
        elif isinstance(node, F):  # unresolved: ordering; OuterRef is the outer query's
            if paths is not None and type(node) is F:
                paths.append(node.name)
        elif isinstance(node, WhereNode):
            _check(node)
            self.walk(node.children, paths)
        elif isinstance(node, Lookup):
            _check(node)
            self.walk((node.lhs, node.rhs), paths)
        elif hasattr(node, "get_source_expressions"):
            _check(node)
            self.walk(node.get_source_expressions(), paths)
        elif hasattr(node, "as_sql") or hasattr(node, "resolve_expression"):
            _check(node)  # NothingNode, SubqueryConstraint (Django 4.2)
            self.walk(getattr(node, "query_object", None))

    # -- per-alias conjunctions ----------------------------------------------------------------
    def emit(self, scope: Scope, dnf: list[Disjunct]) -> None:
        if not dnf:
            return  # always false: no row of these tables can change the result
        aliases = scope.aliases
        links: dict[tuple[str, str], tuple[str, str]] = {}  # union-find over (alias, column)

        def find(c: tuple[str, str]) -> tuple[str, str]:
            while c in links:
                c = links[c]
            return c

        for alias, (_, parent, join_field, _) in aliases.items():
            for left, right, text in join_links(join_field) if parent is not None else ():
                if self.text_exact or not text:
                    a, b = find((parent, left)), find((alias, right))
                    if a != b:
                        links[b] = a
        members: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for c in list(links):
            root = find(c)
            members.setdefault(root, [root]).append(c)
        root_of = {c: root for root, cs in members.items() for c in cs}
        targets = [(a, self.tables.setdefault(info[0], set())) for a, info in aliases.items()]
        for d in dnf:
            known: dict[str, dict[str, Hashable]] = {}
            carried: dict[tuple[str, str], set[Hashable]] = {}
            for (alias, column), value in d.items():
                info = aliases.get(alias)
                if info is None or (value is None and info[3]):
                    continue
                known.setdefault(alias, {})[column] = value
                if value is not None and (alias, column) in root_of:
                    carried.setdefault(root_of[alias, column], set()).add(value)
            for root, values in carried.items():
                if len(values) == 1:  # conflicting values carry nothing
                    (value,) = values
                    for alias, column in members[root]:
                        known.setdefault(alias, {}).setdefault(column, value)
            for alias, conjs in targets:
                own = known.get(alias)
                conjs.add(tuple(sorted(own.items())) if own else ())

    def result(self) -> Deps:
        return {
            table: _ALL if () in conjs or len(conjs) > self.max_conjs else frozenset(conjs)
            for table, conjs in self.tables.items()
        }


def _product(left: list[Disjunct], right: list[Disjunct]) -> list[Disjunct]:
    """AND of two DNFs; a disjunct with two different values for one column is dropped."""
    if right == [{}]:
        return left
    out = []
    for a in left:
        for b in right:
            merged = dict(a)
            for key, value in b.items():
                if merged.setdefault(key, value) != value:
                    break
            else:
                out.append(merged)
    return out


def text_exact(using: str | None) -> bool:
    """Whether text equality in Python is the database's on ``using`` (or on every database)."""
    exact = _exact_text.get(using)
    if exact is None:
        aliases = [using] if using is not None else list(connections)
        exact = all(connections[alias].vendor in _EXACT_TEXT_VENDORS for alias in aliases)
        _exact_text[using] = exact
    return exact


def query_dependencies(
    query: Query, *, max_in: int = 100, max_conjs: int = 64, using: str | None = None
) -> Deps:
    """Return what ``query``'s result depends on; raise ``UncacheableQuery`` if unknowable.

    ``using`` names the database the query runs on (text equality is exact only on some);
    without it every configured database must qualify.
    """
    walker = _Walker(max_in, max_conjs, text_exact(using))
    walker.query(query)
    return walker.result()


def _tables(model: Any) -> list[Any]:
    opts = model._meta.concrete_model._meta
    return [opts.model, *opts.get_parent_list()]


def model_dependencies(model: Any) -> Deps:
    """Every row of the model's table and of its multi-table parents' tables."""
    return {m._meta.db_table: _ALL for m in _tables(model)}


def instance_dependencies(instance: Any) -> Deps:
    """The instance's row in its table and in each multi-table parent's table (by primary key)."""
    deps: Deps = {}
    opts = instance._meta.concrete_model._meta
    for model in _tables(type(instance)):
        pk = model._meta.pk
        fields = tuple(getattr(pk, "fields", ()) if pk.column is None else (pk,))  # composite
        values = [getattr(instance, f.attname) for f in fields]
        if model is not opts.model and values == [None]:  # unsaved child: the parent link
            values = [getattr(instance, opts.get_ancestor_link(model).attname)]
        conj = tuple(
            sorted((f.column, column_value(f, v)) for f, v in zip(fields, values, strict=True))
        )
        ok = conj and all(v is not None and v is not UNKNOWN for _, v in conj)
        deps[model._meta.db_table] = frozenset({conj}) if ok else _ALL
    return deps


def merge(*deps: Deps) -> Deps:
    out: dict[str, set[Conj]] = {}
    for d in deps:
        for table, conjs in d.items():
            out.setdefault(table, set()).update(conjs)
    return {t: _ALL if () in c else frozenset(c) for t, c in out.items()}
