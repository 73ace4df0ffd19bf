"""Writes that report their rows' old values themselves: one statement instead of four.

Invalidating an ``UPDATE`` or ``DELETE`` needs the rows' old values, read at the moment of the
write (another process may move a row in between). The general way, a ``SELECT ... FOR UPDATE``
inside a transaction opened for it, costs ``save()`` three extra database round trips. On
PostgreSQL the statement itself can return them:

* ``DELETE ... RETURNING <columns>`` returns the deleted rows as they were;
* ``UPDATE t SET ... FROM (SELECT <columns> FROM t WHERE <cond> FOR NO KEY UPDATE) AS old
  WHERE <cond> AND t.pk = old.pk RETURNING old.<columns>, t.<columns>`` returns each row's
  version before and after (``<cond>`` is repeated outside: implied by the join, it lets the
  planner start from the primary key index, which plans and runs measurably faster). The
  sub-select locks each row as the ``UPDATE`` itself does (``NO KEY``: the foreign-key checks
  of concurrent inserts that reference the row are not held up) and, at READ COMMITTED, waits
  for a concurrent writer and reads the row as that writer committed it, so ``old`` is the
  version this statement replaced; the rows updated are exactly the rows it returns (no
  phantom can slip in).

Only statements whose ``WHERE`` names rows by primary key (what ``save()``, ``delete()`` and
``bulk_update()`` send) take this path, so what comes back is bounded by the keys listed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections
from django.db.models.expressions import Col
from django.db.models.lookups import Exact, In
from django.db.models.sql.where import AND

from freshcache.memo import Memo

__all__ = ["Returned", "pinned_rows", "run_returning"]

#: (the statement's result, old rows, new rows); rows are None when the statement did not
#: return what was asked (the caller then invalidates the whole table).
Returned = tuple[Any, list[tuple[Any, ...]] | None, list[tuple[Any, ...]] | None]

_OLD = "__freshcache_old"
_UNKNOWN: Any = object()
#: Rewritten statements by (statement, delete, vendor, returned columns): the text, the names
#: of the returned columns, and how many trailing parameters (the WHERE's) are sent twice.
_rewrites: Memo[tuple[Any, ...], tuple[str, list[str], int] | None] = Memo()
_converters: dict[tuple[int, str], tuple[Any, list[Any], Any]] = {}


def pinned_rows(query: Any, limit: int) -> bool:
    """Whether ``query``'s WHERE is ``pk = v`` or ``pk IN (...)`` with at most ``limit`` values."""
    where = query.where
    if where.connector != AND or where.negated or len(where.children) != 1:
        return False
    node = where.children[0]
    if not isinstance(node, (Exact, In)):
        return False
    lhs, rhs = node.lhs, node.rhs
    if type(lhs) is not Col or lhs.alias != query.base_table:
        return False
    if lhs.target is not query.model._meta.pk or hasattr(rhs, "resolve_expression"):
        return False
    if isinstance(node, In):
        return isinstance(rhs, (list, tuple, set, frozenset)) and len(rhs) <= limit
    return True


def run_returning(
    compiler: Any, run: Callable[[], Any], fields: Sequence[Any], delete: bool
) -> Returned | None:
    """Run the write so that it returns ``fields`` of the rows it touched (old, and for an update
    new); None, with nothing executed, when this statement cannot be rewritten."""
    connection = connections[compiler.using]
    if connection.vendor != "postgresql" or getattr(compiler, "returning_fields", None):
        return None
    query = compiler.query
    if not delete and getattr(query, "related_updates", None):
        return None
    sql, params = compiler.as_sql()
    if not sql or " RETURNING " in sql.upper():
        return None
    memo = (
        sql,
        delete,
        connection.vendor,
        tuple((f.model._meta.db_table, f.column) for f in fields),
    )
    known = _rewrites.get(memo, _UNKNOWN)
    if known is _UNKNOWN:
        known = _rewrites.put(memo, _rewrite(compiler, connection, sql, params, fields, delete))
    if known is None:
        return None
    rewritten, names, repeated = known
    # Both rewrites keep the parameters in their order (SET values, then the WHERE's); the
    # update's WHERE appears twice, so its parameters follow once more.
    new_params = tuple(params)
    if repeated:
        new_params += new_params[-repeated:]

    def as_sql(*args: Any, **kwargs: Any) -> Any:
        return rewritten, new_params

    returned: list[list[tuple[Any, ...]]] = []

    def catch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # Innermost wrapper: it sees the statement as sent, whatever outer wrappers (a SQL
        # commenter...) made of the text, which still holds ours; the text (with its columns'
        # own names) tells it from anything else. Not ``cursor.description``: psycopg builds
        # it anew on every call, which costs a save more than the comparison.
        result = execute(sql, params, many, context)
        if sql is rewritten or rewritten in sql:
            rows = context["cursor"].fetchall()
            if all(len(row) == len(names) for row in rows):
                returned.append(rows)
        return result

    compiler.as_sql = as_sql
    try:
        with connection.execute_wrapper(catch):
            result = run()
    finally:
        del compiler.as_sql
    if len(returned) != 1:
        return result, None, None
    n = len(fields)
    old_rows = [_converted(connection, fields, row[:n]) for row in returned[0]]
    new_rows = [] if delete else [_converted(connection, fields, row[n:]) for row in returned[0]]
    return result, old_rows, new_rows


def _rewrite(
    compiler: Any,
    connection: Any,
    sql: str,
    params: Sequence[Any],
    fields: Sequence[Any],
    delete: bool,
) -> tuple[str, list[str], int] | None:
    """The statement that returns ``fields``, the names of the columns it returns and how many
    trailing parameters it repeats; it depends only on the statement's text, which is why
    :func:`run_returning` remembers it."""
    query = compiler.query
    qn = connection.ops.quote_name
    table = qn(query.model._meta.db_table)
    # Returned columns get names of their own: a statement that holds them is this one.
    names = [f"__freshcache_o{i}" for i in range(len(fields))]
    if not delete:
        names += [f"__freshcache_n{i}" for i in range(len(fields))]
    if delete:
        rewritten = f"{sql} RETURNING " + ", ".join(
            f"{table}.{qn(f.column)} AS {qn(name)}" for f, name in zip(fields, names, strict=True)
        )
        return rewritten, names, 0
    split = _split_update(compiler, sql, params)
    if split is None:
        return None
    head, where_sql, n_where = split
    old = qn(_OLD)
    aliases = [qn(f"c{i}") for i in range(len(fields))]
    picked = ", ".join(
        f"{table}.{qn(f.column)} AS {a}" for f, a in zip(fields, aliases, strict=True)
    )
    returning = [f"{old}.{a}" for a in aliases] + [f"{table}.{qn(f.column)}" for f in fields]
    rewritten = (
        f"{head} FROM (SELECT {picked} FROM {table} WHERE {where_sql} FOR NO KEY UPDATE) "
        f"AS {old} "
        f"WHERE ({where_sql}) AND {table}.{qn(fields[0].column)} = {old}.{aliases[0]} RETURNING "
        + ", ".join(f"{r} AS {qn(name)}" for r, name in zip(returning, names, strict=True))
    )
    return rewritten, names, n_where


def _split_update(compiler: Any, sql: str, params: Sequence[Any]) -> tuple[str, str, int] | None:
    """``UPDATE t SET ...``, its WHERE (recompiled to find where one ends and the other
    starts) and the WHERE's number of parameters; None if the statement is not shaped as
    expected."""
    where_sql, where_params = compiler.compile(compiler.query.where)
    tail = f" WHERE {where_sql}"
    n = len(where_params)
    params = tuple(params)
    if not where_sql or not sql.endswith(tail) or params[len(params) - n :] != tuple(where_params):
        return None
    return sql[: -len(tail)], where_sql, n


def _converted(connection: Any, fields: Sequence[Any], row: Sequence[Any]) -> tuple[Any, ...]:
    """The values as the ORM would give them (backend and field converters applied)."""
    out = []
    for field, value in zip(fields, row, strict=True):
        key = (id(field), connection.alias)
        entry = _converters.get(key)
        if entry is None or entry[0] is not field:
            col = field.get_col(field.model._meta.db_table)
            convs = [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
            entry = _converters[key] = (field, convs, col)
        for convert in entry[1]:
            value = convert(value, entry[2], connection)
        out.append(value)
    return tuple(out)
