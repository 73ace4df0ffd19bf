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

Most ``save()`` calls keep the columns the schemes need (a slug, a foreign key) as they were,
and the join and lock above cost PostgreSQL about as much again as the ``UPDATE`` itself. So
an update of one row whose needed columns are all set to plain values is first sent *guarded*:
``UPDATE t SET ... WHERE <cond> AND <each needed column> IS NOT DISTINCT FROM <the value it is
set to> RETURNING <the needed columns>, <the same test on the new row>``. The ``WHERE`` is
evaluated on the version the statement replaces (at READ COMMITTED, again on the version a
concurrent writer committed), so a row that comes back had those very values before, and,
when the second test holds (no trigger changed them), has them after: old and new are one
row. The comparisons are exact (integers, booleans, UUIDs; text as bytes, collation aside),
because equal must mean "the same stamp". When nothing comes back (the row is gone, or a
needed column changes) the locking statement above follows; it costs a round trip, and only
writes that move a row between stamps pay it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models.expressions import Col
from django.db.models.lookups import Exact, In
from django.db.models.sql.where import AND

from freshcache.memo import Memo
from freshcache.prepared import where_allowed

__all__ = ["Returned", "guarded_form", "guarded_rows", "pinned_rows", "run_returning", "unguarded"]

#: (the statement's result, old rows, new rows, the whole row as written); rows are None when
#: the statement did not return what was asked (the caller then invalidates the whole table);
#: the whole row, raw, only when asked for and the guarded statement returned it.
Returned = tuple[
    Any, list[tuple[Any, ...]] | None, list[tuple[Any, ...]] | None, tuple[Any, ...] | None
]

_OLD = "__freshcache_old"
_UNKNOWN: Any = object()
#: Rewritten statements by (statement, delete, vendor, returned columns): the text, the names
#: of the returned columns, and how many trailing parameters (the WHERE's) are sent twice.
_rewrites: Memo[tuple[Any, ...], tuple[str, list[str], int] | None] = Memo()
#: Guarded forms of one-row updates by the same key: text, returned names, repeated parameters.
_guards: Memo[tuple[Any, ...], tuple[str, list[str], list[int]] | None] = Memo()
_converters: dict[tuple[int, str], tuple[Any, list[Any], Any]] = {}
#: Set while a write runs that has just sent its guarded form and seen no row come back
#: (:mod:`freshcache.fastsave`): sending it again would only find the same.
unguarded: ContextVar[bool] = ContextVar("freshcache_unguarded", default=False)


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
    compiler: Any,
    run: Callable[[], Any],
    fields: Sequence[Any],
    delete: bool,
    whole: Sequence[Any] = (),
) -> Returned | None:
    """Run the write so that it returns ``fields`` of the rows it touched (old, and for an update
    new); None, with nothing executed, when this statement cannot be rewritten. ``whole``: the
    fields of the row to return as written too, if the guarded statement runs (for
    :mod:`freshcache.writethrough`)."""
    connection = connections[compiler.using]
    if connection.vendor != "postgresql" or getattr(compiler, "returning_fields", None):
        return None
    query = compiler.query
    if not delete and getattr(query, "related_updates", None):
        return None
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:  # ``pk__in=[]``: Django sends nothing and reports 0 rows
        return run(), [], [], None
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
    if not delete and not unguarded.get():
        guarded = (*memo, tuple(f.column for f in whole))
        guard = _guards.get(guarded, _UNKNOWN)
        if guard is _UNKNOWN:
            guard = _guards.put(
                guarded, guarded_form(compiler, connection, sql, params, fields, whole)
            )
        if guard is not None:
            text, names, picks = guard
            result, rows = _execute(
                compiler,
                run,
                connection,
                text,
                (*params, *(params[i] for i in picks)),
                names,
                prepare=True,
            )
            if rows is None:
                return result, None, None, None
            if rows:
                return (result, *guarded_rows(connection, fields, bool(whole), rows))
    rewritten, names, repeated = known
    # Both rewrites keep the parameters in their order (SET values, then the WHERE's); the
    # update's WHERE appears twice, so its parameters follow once more.
    new_params = tuple(params)
    if repeated:
        new_params += new_params[-repeated:]
    result, returned = _execute(
        compiler, run, connection, rewritten, new_params, names, prepare=delete
    )
    if returned is None:
        return result, None, None, None
    n = len(fields)
    old_rows = [_converted(connection, fields, row[:n]) for row in returned]
    new_rows = [] if delete else [_converted(connection, fields, row[n:]) for row in returned]
    return result, old_rows, new_rows, None


def guarded_rows(
    connection: Any, fields: Sequence[Any], whole: bool, rows: Sequence[Sequence[Any]]
) -> tuple[list[tuple[Any, ...]] | None, list[tuple[Any, ...]] | None, tuple[Any, ...] | None]:
    """What the rows a guarded update returned (at least one) report: its old rows, its new
    rows (none: old and new are one row) and, if ``whole`` was asked for and the row is final,
    the whole row as written. Old and new are None when they cannot be trusted: more than one
    row, or a trigger changed a needed column."""
    if len(rows) > 1:
        return None, None, None
    n = len(fields)
    if rows[0][n] is not True:  # a trigger changed a needed column
        return None, None, None
    final = whole and rows[0][n + 1] is True
    row = tuple(rows[0][n + 2 :]) if final else None
    return [_converted(connection, fields, rows[0][:n])], [], row


def _execute(
    compiler: Any,
    run: Callable[[], Any],
    connection: Any,
    text: str,
    params: tuple[Any, ...],
    names: list[str],
    prepare: bool = False,
) -> tuple[Any, list[tuple[Any, ...]] | None]:
    """Run the write as ``text``; its result and the rows it returned (None if they did not
    come back: another statement ran on the cursor after it, or the text was not sent).
    ``prepare``: the text binds only plain values where their column gives them a type, so it
    may run as a prepared statement where the connection allows those
    (:mod:`freshcache.prepared`)."""

    def as_sql(*args: Any, **kwargs: Any) -> Any:
        return text, params

    returned: list[list[tuple[Any, ...]]] = []

    def catch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # Innermost wrapper: it sees the statement as sent, whatever outer wrappers (a SQL
        # commenter...) made of the text, which still holds ours; the text (with its columns'
        # own names) tells it from anything else. Not ``cursor.description``: psycopg builds
        # it anew on every call, which costs a save more than the comparison.
        result = execute(sql, params, many, context)
        if sql is text or text in sql:
            rows = context["cursor"].fetchall()
            if all(len(row) == len(names) for row in rows):
                returned.append(rows)
        return result

    compiler.as_sql = as_sql
    try:
        with where_allowed(connection, prepare), connection.execute_wrapper(catch):
            result = run()
    finally:
        del compiler.as_sql
    return result, (returned[0] if len(returned) == 1 else None)


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


#: Column types whose SQL equality is identity of the value (and so of its stamp).
_EXACT_TYPES = frozenset({"integer", "bigint", "smallint", "boolean", "uuid"})
_TEXT_TYPE = re.compile(r"(varchar(\(\d+\))?|text|citext)")


def guarded_form(
    compiler: Any,
    connection: Any,
    sql: str,
    params: Sequence[Any],
    fields: Sequence[Any],
    whole: Sequence[Any] = (),
) -> tuple[str, list[str], list[int]] | None:
    """The guarded form of a one-row update (see the module's docstring): its text, the names
    of the columns it returns (``whole``'s last, as the row has them), and which of the
    statement's parameters its guards repeat, in order; None when the update is not of that
    shape. Like :func:`_rewrite`, it depends only on the statement's text, whose SET list says
    which values are plain parameters."""
    query = compiler.query
    node = query.where.children[0] if len(query.where.children) == 1 else None
    if not isinstance(node, Exact):
        return None
    split = _split_update(compiler, sql, params)
    if split is None:
        return None
    head, where_sql, n_where = split
    qn = connection.ops.quote_name
    table = qn(query.model._meta.db_table)
    prefix = f"UPDATE {table} SET "
    if not head.startswith(prefix):
        return None
    # The SET list, rebuilt from the fields set: each must be ``"col" = %s`` or ``"col" =
    # NULL`` (an expression, a custom placeholder... is not a value to compare with).
    position: dict[str, int | None] = {}
    index = 0
    rest = head[len(prefix) :]
    for field, _model, _value in query.values:
        name = qn(field.column)
        for form, param in ((f"{name} = %s", True), (f"{name} = NULL", False)):
            if rest.startswith(form) and rest[len(form) :][:2] in ("", ", "):
                position[field.column] = index if param else None
                index += param
                rest = rest[len(form) + 2 :]
                break
        else:
            return None
    if rest or index != len(params) - n_where:
        return None
    pk = fields[0]
    if pk.column in position or n_where != 1:
        return None
    guards: list[str] = []
    picks: list[int] = []
    for field in fields[1:]:
        kind = _exactness(field, connection)
        if kind is None or field.column not in position:
            return None
        at = position[field.column]
        column = f"{table}.{qn(field.column)}"
        if at is None:
            guards.append(f"{column} IS NULL")
            continue
        # The value cast as the column stores it (the SET's assignment casts: 5.5 is 6 in an
        # integer column), so the comparison is the stored value's and never a type error.
        if kind == "text":
            guards.append(f'({column}::text COLLATE "C") IS NOT DISTINCT FROM (%s)::text')
        else:
            guards.append(f"{column} IS NOT DISTINCT FROM (%s)::{kind}")
        picks.append(at)
    # The same test on the new row, and its key still the one named (no trigger moved them).
    test = " AND ".join(guards) or "TRUE"
    same = f"{test} AND {table}.{qn(pk.column)} = %s"
    names = [f"__freshcache_n{i}" for i in range(len(fields))] + ["__freshcache_same"]
    returned = [f"{table}.{qn(f.column)}" for f in fields] + [f"({same})"]
    if whole:
        names += ["__freshcache_final"] + [f"__freshcache_w{i}" for i in range(len(whole))]
        returned += [f"({_FINAL.format(table=table)})"]
        returned += [f"{table}.{qn(f.column)}" for f in whole]
    text = f"{head} WHERE ({where_sql}) AND {test} RETURNING " + ", ".join(
        f"{r} AS {qn(name)}" for r, name in zip(returned, names, strict=True)
    )
    # After the statement's own parameters: the guards', then the test's and the key's.
    return text, names, [*picks, *picks, len(params) - 1]


#: Whether the row returned is the row committed: the table has no trigger that could change
#: it after RETURNING was evaluated, that is none calling a function of the database's own
#: (OIDs from 16384 on: user and extension functions), and none of PostgreSQL's foreign-key
#: actions that update rows (RI_FKey_cascade_upd, _setnull_upd, _setdefault_upd: built-ins,
#: whose OIDs are fixed). Coarse (a BEFORE trigger counts too) because it is cheap: one
#: catalog lookup by index, which a finer test on the trigger's type makes dearer to plan.
_FINAL = (
    "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = {table}.tableoid"
    " AND (t.tgfoid >= 16384 OR t.tgfoid IN (1647, 1651, 1653)))"
)


def _exactness(field: Any, connection: Any) -> str | None:
    """How :func:`guarded_form` compares the column so that equal values are one stamp: as its own
    type (integers, booleans, UUIDs: the type's name) or as "text" (bytes); None for the
    others (numbers with a scale, dates, JSON, arrays...), which take the locking statement."""
    db_type = (field.db_type(connection) or "").lower()
    if db_type in _EXACT_TYPES:
        return db_type
    if _TEXT_TYPE.fullmatch(db_type):
        return "text"
    return None


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
