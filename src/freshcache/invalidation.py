"""Invalidation: what every kind of write deletes, and the public API to invalidate by hand.

ORM writes are seen where they are executed, in the insert, update and delete compilers, so one
mechanism covers ``save()``, ``delete()`` with cascades, m2m changes on any through model,
``bulk_create``, ``bulk_update``, ``QuerySet.update()``/``delete()`` and their fast paths:

* inserts invalidate the new rows' values (every concrete column, known from the objects);
* updates and deletes read the affected rows' old values *from the database* first (only the
  columns the table's schemes need, locking them inside a transaction where the database can),
  then invalidate old and new values; past ``FRESHCACHE_GRANULAR_WRITE_LIMIT`` rows, or when a
  scheme appeared that the read did not cover, the whole table is invalidated instead.

Invalidations inside a transaction run at commit (see :mod:`freshcache.transaction`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import Model, QuerySet
from django.db.models.expressions import Value
from django.db.models.sql.query import Query

from freshcache import dbcascade, writethrough
from freshcache import transaction as tx
from freshcache.conf import key_prefix, settings
from freshcache.returning import pinned_rows, run_returning
from freshcache.signals import cache_invalidated
from freshcache.stamps import row_conj_values
from freshcache.store import TableChange, store
from freshcache.writescope import reads_other_rows

__all__ = [
    "deliver",
    "invalidate_all",
    "invalidate_model",
    "invalidate_obj",
    "invalidate_returned",
    "needed_fields",
    "no_invalidation",
]

F = TypeVar("F", bound=Callable[..., Any])
Change = tuple[str, TableChange]  # (key prefix, change)

#: The table name of a change that stands for "everything under the prefix".
ALL_TABLES = "*"

_suspended: ContextVar[int] = ContextVar("freshcache_no_invalidation", default=0)
_force_granular: ContextVar[bool] = ContextVar("freshcache_force_granular", default=False)


class _NoInvalidation:
    """``with no_invalidation:`` or ``@no_invalidation``: writes invalidate nothing.

    Thread- and task-local (a context variable), nestable. Pair it with ``invalidate_obj`` or
    ``invalidate_model`` in a ``finally`` to postpone invalidation in batch jobs.
    """

    def __enter__(self) -> None:
        _suspended.set(_suspended.get() + 1)

    def __exit__(self, *exc: object) -> None:
        _suspended.set(_suspended.get() - 1)

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


no_invalidation = _NoInvalidation()


def active() -> bool:
    return bool(settings.ENABLED) and not _suspended.get()


def skipped(using: str, tables: Sequence[str]) -> None:
    """A write happened while invalidation was off: under ``FRESHCACHE_ENABLED = False`` the
    tables are remembered (no backend call) and invalidated before this process serves a cached
    value again; under ``no_invalidation`` the caller has taken that on."""
    if settings.ENABLED or _suspended.get():
        return
    prefix = key_prefix(using, tuple(tables))
    if ALL_TABLES in tables:
        store.remember([f"{prefix}g"])
    else:
        store.remember([f"{prefix}r:{table}" for table in tables])


def deliver(changes: Sequence[Change]) -> None:
    """Apply changes to the store, grouped by prefix; fire ``cache_invalidated``."""
    by_prefix: dict[str, list[TableChange]] = {}
    for prefix, change in changes:
        by_prefix.setdefault(prefix, []).append(change)
    error: Exception | None = None
    for prefix, table_changes in by_prefix.items():
        try:
            if any(c.table == ALL_TABLES for c in table_changes):
                store.invalidate_all(prefix)
            else:
                store.invalidate(table_changes, prefix)
        except Exception as exc:  # the other prefixes still get theirs
            error = error or exc
    if error is not None:
        raise error
    if cache_invalidated.receivers:
        for _, change in changes:
            cache_invalidated.send(
                sender=None,
                table=change.table,
                whole_table=change.whole_table,
                rows=change.rows,
            )


def request(using: str, changes: Sequence[TableChange]) -> None:
    """Invalidate now, or at commit of the transaction open on ``using``."""
    if not changes:
        return
    prefix = key_prefix(using, tuple(sorted({c.table for c in changes})))
    tx.request(connections[using], deliver, [(prefix, c) for c in changes])


# -- rows and columns -----------------------------------------------------------------------------


def needed_fields(model: type[Model], using: str) -> tuple[list[Any], frozenset[str]] | None:
    """The fields whose old values the table's schemes need (pk first, empty when the table has
    no schemes); None means "invalidate the whole table"."""
    if getattr(model._meta, "is_composite_pk", False):
        return None  # no one column names a row (Django 5.2's CompositePrimaryKey)
    table = model._meta.db_table
    schemes = store.known_schemes(key_prefix(using, (table,)), table)
    if schemes is None:
        return None
    if not schemes:
        return [], frozenset()
    by_column = {f.column: f for f in model._meta.local_concrete_fields}
    columns = {c for s in schemes for c in s.split(",")}
    if not columns <= set(by_column):
        return None
    pk = model._meta.pk
    fields = [pk] + [by_column[c] for c in sorted(columns) if c != pk.column]
    return fields, frozenset(f.column for f in fields)


def _normalized(
    model: type[Model], fields: Sequence[Any], row: Sequence[Any]
) -> dict[str, Hashable]:
    values = {f.attname: v for f, v in zip(fields, row, strict=True)}
    return row_conj_values(model, values)


#: Value types whose equality is identity of the stamp they make (no 1 == True, 1.5 == 1.50,
#: or same instant in two time zones).
_PLAIN_TYPES = frozenset({int, str, bool, type(None)})


def _distinct_rows(
    old: Sequence[tuple[Any, ...]], new: Sequence[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """``old`` then ``new``, without the new rows that repeat an old one: a ``save()`` that
    keeps its key columns returns the same values twice, and one set of stamps is enough."""
    seen = {key for key in map(_plain_key, old) if key is not None}
    rows = list(old)
    for row in new:
        key = _plain_key(row)
        if key is None or key not in seen:
            rows.append(row)
    return rows


def _plain_key(row: tuple[Any, ...]) -> tuple[tuple[type, ...], tuple[Any, ...]] | None:
    if all(type(v) in _PLAIN_TYPES for v in row):
        return tuple(map(type, row)), row
    return None


def _select_rows(
    model: type[Model],
    query: Query,
    using: str,
    fields: Sequence[Any],
    limit: int | None,
    delete: bool,
) -> list[tuple[Any, ...]] | None:
    """Rows the write is about to touch, read from the database; None if over ``limit``.

    Inside a transaction the rows are locked as the write itself will lock them: an update
    that keeps its keys takes ``FOR NO KEY UPDATE`` where the database has it, so inserts that
    reference these rows (their foreign-key checks) are not held up, as with Django's own
    ``UPDATE``."""
    pre = query.chain(klass=Query)
    qs: QuerySet[Any] = QuerySet(model=model, query=pre, using=using)
    qs = qs.values_list(*(f.attname for f in fields)).order_by(fields[0].attname)
    qs = qs.cache(ops=())
    connection = connections[using]
    features = connection.features
    if tx.in_transaction(connection) and features.has_select_for_update:
        qs = qs.select_for_update(
            of=("self",) if features.has_select_for_update_of else (),
            no_key=not delete and features.has_select_for_no_key_update,
        )
    if limit is None:
        return list(qs)
    rows = list(qs[: limit + 1])
    return None if len(rows) > limit else rows


def _rows_by_pk(model: type[Model], using: str, fields: Sequence[Any], pks: list[Any]) -> list[Any]:
    qs = model._base_manager.db_manager(using).filter(pk__in=pks)
    return list(qs.values_list(*(f.attname for f in fields)).order_by().nocache())


# -- compiler hooks -------------------------------------------------------------------------------


def on_insert(compiler: Any, run: Callable[[], Any]) -> Any:
    """After an INSERT: the new rows' values of every concrete column are known."""
    result = run()
    query = compiler.query
    model = query.model
    using = compiler.using
    table = model._meta.db_table
    if not active():
        skipped(using, [table])
        return result
    if (
        getattr(query, "on_conflict", None) is not None and getattr(query, "update_fields", None)
    ) or getattr(model._meta, "is_composite_pk", False):
        # An upsert may have updated rows it does not report; a composite key is no column.
        request(using, [TableChange(table=table, whole_table=True)])
        return result
    fields = list(model._meta.local_concrete_fields)
    pk = model._meta.pk
    returned = list(result or ())
    returning = compiler.returning_fields or []
    rows: list[Mapping[str, Hashable]] = []
    columns = {f.column for f in fields}
    for i, obj in enumerate(query.objs):
        values = {f.attname: getattr(obj, f.attname, None) for f in fields}
        if i < len(returned):
            for field, value in zip(returning, returned[i], strict=False):
                values[field.attname] = value
        if values.get(pk.attname) is None:  # not returned (``ignore_conflicts``): unknown
            del values[pk.attname]
            columns.discard(pk.column)
        for field in fields:
            if hasattr(values.get(field.attname), "resolve_expression"):
                # SQL (``Upper(...)``, a database default) whose value only the database knows:
                # the row's stamps for this column cannot be named.
                del values[field.attname]
                columns.discard(field.column)
        rows.append(row_conj_values(model, values))
    request(using, [TableChange(table=table, rows=rows, columns=frozenset(columns))])
    return result


def _row_count(result: Any) -> int:
    """How many rows a write's ``execute_sql`` result says it touched: 0 when nothing was
    executed (an empty WHERE), -1 when it cannot tell. The rowcount is an int (Django 5.2+) or
    on the returned cursor."""
    if result is None:
        return 0
    if isinstance(result, int) and not isinstance(result, bool):
        count = result
    else:
        count = getattr(result, "rowcount", -1)
    return count if isinstance(count, int) and count >= 0 else -1


def _more_rows_than_read(result: Any, old: list[Any]) -> bool:
    """Whether the statement touched rows the pre-read did not see.

    At READ COMMITTED a row inserted (or changed to match) and committed between the pre-read
    and the write is written too, and its values are unknown: the caller then invalidates the
    whole table. When the count cannot be known, assume the worst.
    """
    count = _row_count(result)
    return count < 0 or count > len(old)


def _plain_new_values(query: Any) -> dict[str, Any] | None:
    """attname -> new value for an UpdateQuery, or None if any value is an expression."""
    new: dict[str, Any] = {}
    for field, _model, value in query.values:
        if isinstance(value, Value):
            value = value.value
        if hasattr(value, "resolve_expression"):
            return None
        if isinstance(value, Model) and field.remote_field:
            value = value.prepare_database_save(field)
        new[field.attname] = value
    return new


def on_update_or_delete(compiler: Any, run: Callable[[], Any], *, delete: bool) -> Any:
    """Run an ``UPDATE`` or ``DELETE`` and invalidate what it changed; a delete also invalidates
    the tables the database itself deletes from or updates (:mod:`freshcache.dbcascade`)."""
    below = dbcascade.tables_below((compiler.query.model._meta.db_table,)) if delete else ()
    result = _update_or_delete(compiler, run, delete=delete)
    if below and _row_count(result) != 0:
        using = compiler.using
        if active():
            request(using, [TableChange(table=t, whole_table=True) for t in below])
        else:
            skipped(using, below)
    return result


def _update_or_delete(compiler: Any, run: Callable[[], Any], *, delete: bool) -> Any:
    """Read the rows' old values, run the statement, invalidate old and new values.

    The old values must be the database's at the moment of the write: another process may move
    the row between our read and our write. Inside a transaction the read locks the rows
    (``SELECT ... FOR UPDATE``); in autocommit mode, on a database that can lock rows, the read
    and the write are put in a transaction of their own so that the lock can be taken.
    """
    query = compiler.query
    model = query.model
    using = compiler.using
    if not active():
        result = run()
        skipped(using, [model._meta.db_table])
        return result
    connection = connections[using]
    needed = needed_fields(model, using)
    if needed and needed[0]:
        limit = 1 << 62 if _force_granular.get() else int(settings.GRANULAR_WRITE_LIMIT)
        pinned = pinned_rows(query, limit)
        if not pinned and reads_other_rows(query):
            needed = None  # the condition reads other rows: locking ours cannot pin those written
        elif pinned:
            through = None if delete else writethrough.pending(model, connection)
            outcome = run_returning(compiler, run, needed[0], delete, through[1] if through else ())
            if outcome is not None:
                result, old, new, written = outcome
                invalidate_returned(model, connection, needed, through, old, new, written)
                return result
    if (
        needed
        and needed[0]
        and not connection.in_atomic_block
        and connection.get_autocommit()
        and connection.features.has_select_for_update
    ):
        with transaction.atomic(using=using, savepoint=False):
            return _write_with_old_values(compiler, run, delete, needed)
    return _write_with_old_values(compiler, run, delete, needed)


def invalidate_returned(
    model: type[Model],
    connection: Any,
    needed: tuple[list[Any], frozenset[str]],
    through: tuple[writethrough.Loaded, list[Any], int] | None,
    old: list[tuple[Any, ...]] | None,
    new: list[tuple[Any, ...]] | None,
    written: tuple[Any, ...] | None,
) -> None:
    """Invalidate what a write that returned its rows' values changed (the whole table when
    they did not come back), storing the row it wrote if its save writes through."""
    table = model._meta.db_table
    using = connection.alias
    if old is None or new is None:
        request(using, [TableChange(table=table, whole_table=True)])
        return
    fields, columns = needed
    rows = [_normalized(model, fields, row) for row in _distinct_rows(old, new)]
    fill = None
    if through is not None and written is not None:
        fill = writethrough.fill(through[0], written, through[2], connection)
    request(using, [TableChange(table=table, rows=rows, columns=columns, fill=fill)])


def _write_with_old_values(
    compiler: Any,
    run: Callable[[], Any],
    delete: bool,
    needed: tuple[list[Any], frozenset[str]] | None,
) -> Any:
    query = compiler.query
    model = query.model
    using = compiler.using
    table = model._meta.db_table
    old: list[tuple[Any, ...]] | None = []
    if needed is not None and needed[0]:
        limit = None if _force_granular.get() else settings.GRANULAR_WRITE_LIMIT
        old = _select_rows(model, query, using, needed[0], limit, delete)
    result = run()
    read = needed is not None and bool(needed[0])
    if needed is None or old is None or (read and _more_rows_than_read(result, old)):
        request(using, [TableChange(table=table, whole_table=True)])
        return result
    fields, columns = needed
    rows = [_normalized(model, fields, row) for row in old]
    if not delete and old:
        new_values = _plain_new_values(query)
        if new_values is None or any(getattr(f, "generated", False) for f in fields):
            # An expression, or a generated column the database recomputes: read what it wrote.
            fresh = _rows_by_pk(model, using, fields, [row[0] for row in old])
            rows.extend(_normalized(model, fields, row) for row in fresh)
        else:
            for row in old:
                values = {f.attname: v for f, v in zip(fields, row, strict=True)}
                values.update(new_values)
                rows.append(row_conj_values(model, values))
    request(using, [TableChange(table=table, rows=rows, columns=columns)])
    return result


# -- public API -----------------------------------------------------------------------------------


def _family_tables(model: type[Model]) -> list[str]:
    concrete = model._meta.concrete_model
    tables = [concrete._meta.db_table]
    tables.extend(parent._meta.db_table for parent in concrete._meta.get_parent_list())
    return tables


def invalidate_obj(obj: Model, using: str | None = None) -> None:
    """Invalidate everything that may have read this object's row, as its attributes say."""
    using = using or obj._state.db or "default"
    if not settings.ENABLED:
        skipped(using, _family_tables(type(obj)))
        return
    concrete = type(obj)._meta.concrete_model
    changes: list[TableChange] = []
    for model in [concrete, *concrete._meta.get_parent_list()]:
        fields = list(model._meta.local_concrete_fields)
        values = {f.attname: getattr(obj, f.attname, None) for f in fields}
        changes.append(
            TableChange(
                table=model._meta.db_table,
                rows=[row_conj_values(model, values)],
                columns=frozenset(f.column for f in fields),
            )
        )
    request(using, changes)


def invalidate_model(model: type[Model], using: str | None = None) -> None:
    """Invalidate every cached read of the model's tables: O(1), whatever is cached."""
    tables = _family_tables(model)
    if not settings.ENABLED:
        skipped(using or "default", tables)
        return
    changes = [TableChange(table=t, whole_table=True) for t in tables]
    request(using or "default", changes)


def invalidate_tables(tables: Iterable[str], using: str = "default") -> None:
    if settings.ENABLED:
        request(using, [TableChange(table=t, whole_table=True) for t in tables])
    else:
        skipped(using, list(tables))


def request_all(using: str) -> None:
    """Invalidate everything for ``using``, now or at commit (a raw write we cannot place)."""
    request(using, [TableChange(table=ALL_TABLES, whole_table=True)])


def invalidate_all(using: str | None = None) -> None:
    """Invalidate everything freshcache stored under its prefix (never FLUSHDB): O(1)."""
    if settings.ENABLED:
        request_all(using or "default")
    else:
        skipped(using or "default", [ALL_TABLES])


class _ForceGranular:
    def __enter__(self) -> None:
        self._token = _force_granular.set(True)

    def __exit__(self, *exc: object) -> None:
        _force_granular.reset(self._token)


def invalidated_update(self: QuerySet[Any], **kwargs: Any) -> int:
    """``update()`` that invalidates exactly the old and new versions of the affected rows,
    however many there are (``update()`` goes table-wide past the granular limit)."""
    with _ForceGranular():
        return self.update(**kwargs)
