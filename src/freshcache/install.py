"""Every patch freshcache makes to Django, in one place, idempotent and reversible.

Django's methods are wrapped (``functools.wraps``, undone through ``__wrapped__``), never copied:

* reads: ``SQLCompiler.execute_sql`` (the one interception point) and the QuerySet methods that
  say which op a read is (``_fetch_all``, ``get``, ``first``, ``last``, ``count``,
  ``aggregate``, ``exists``);
* ORM writes: the insert and update compilers' ``execute_sql``, and deletes (which run through
  ``SQLCompiler.execute_sql`` with a ``SQLDeleteCompiler``); ``Model._do_update``, which sends a
  save's guarded UPDATE without compiling once its shape is known (:mod:`freshcache.fastsave`);
* transactions: ``commit``/``rollback``/``set_autocommit``/``close`` end a connection's dirty
  state, ``run_and_clear_commit_hooks`` runs our invalidations before the user's callbacks;
* raw writes: an execute wrapper on every connection (``connection_created``);
* new methods ``cache``/``nocache``/``invalidated_update`` on QuerySet and managers; admin
  querysets are made ``nocache()``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.models import Model, QuerySet
from django.db.models.manager import BaseManager
from django.db.models.sql import compiler as sql_compiler
from django.db.models.sql.constants import MULTI

from freshcache import capture, chains, dbcascade, fastsave, invalidation, queryset, rawsql
from freshcache import transaction as tx

__all__ = ["install", "installed", "uninstall"]

_patched: list[tuple[type, str, Any]] = []  # (owner, name, original or _MISSING)
_MISSING = object()
_orm_write: ContextVar[bool] = ContextVar("freshcache_orm_write", default=False)


def _wrap(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = owner.__dict__.get(name, _MISSING)
    target = getattr(owner, name)
    wrapper = make(target)
    functools.update_wrapper(wrapper, target)
    wrapper._freshcache = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)
    _patched.append((owner, name, original))


def _add(owner: type, name: str, func: Callable[..., Any]) -> None:
    _patched.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, func)


def _orm(run: Callable[[], Any]) -> Any:
    token = _orm_write.set(True)
    try:
        return run()
    finally:
        _orm_write.reset(token)


# -- compiler wrappers ----------------------------------------------------------------------------


def _select_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, sql_compiler.SQLDeleteCompiler):
            return invalidation.on_update_or_delete(
                self, lambda: _orm(lambda: original(self, *args, **kwargs)), delete=True
            )
        result_type = args[0] if args else kwargs.get("result_type", MULTI)
        chunked = args[1] if len(args) > 1 else kwargs.get("chunked_fetch", False)
        return queryset.cached_execute_sql(original, self, result_type, chunked, args, kwargs)

    return execute_sql


def _insert_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
        return invalidation.on_insert(self, lambda: _orm(lambda: original(self, *args, **kwargs)))

    return execute_sql


def _update_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
        return invalidation.on_update_or_delete(
            self, lambda: _orm(lambda: original(self, *args, **kwargs)), delete=False
        )

    return execute_sql


def _save_update(original: Callable[..., Any]) -> Callable[..., Any]:
    # Another library's ``_do_update`` under ours must run on every save: no fast path then.
    djangos = getattr(original, "__module__", "") == "django.db.models.base"

    def _do_update(
        self: Any,
        base_qs: Any,
        using: str,
        pk_val: Any,
        values: Any,
        update_fields: Any,
        forced_update: Any,
        *rest: Any,
    ) -> Any:
        def django() -> Any:
            return original(self, base_qs, using, pk_val, values, update_fields, forced_update,
                            *rest)  # fmt: skip

        returning_fields = rest[0] if len(rest) == 1 else None
        if not djangos or len(rest) > 1:
            return django()
        return fastsave.update(base_qs, using, pk_val, values, forced_update, returning_fields,
                               _orm, django)  # fmt: skip

    return _do_update


# -- connection wrappers --------------------------------------------------------------------------


def _ends_transaction(committed: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: BaseDatabaseWrapper, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            tx.end_transaction(self, committed)
            return result

        return method

    return make


def _set_autocommit(original: Callable[..., Any]) -> Callable[..., Any]:
    def set_autocommit(self: BaseDatabaseWrapper, autocommit: bool, *args: Any, **kw: Any) -> Any:
        result = original(self, autocommit, *args, **kw)
        if autocommit:
            tx.end_transaction(self, committed=False)
        return result

    return set_autocommit


def _commit_hooks(original: Callable[..., Any]) -> Callable[..., Any]:
    def run_and_clear_commit_hooks(self: BaseDatabaseWrapper) -> Any:
        error = tx.run_commit_hooks_first(self)
        result = original(self)
        if error is not None:
            raise error
        return result

    return run_and_clear_commit_hooks


def raw_write_wrapper(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Execute wrapper: writes that bypass the ORM invalidate the tables they name."""
    if capture.active() and not capture.orm_read.get() and not _orm_write.get():
        capture.poison("SQL run outside the ORM's read path")
    if _orm_write.get():
        result = execute(sql, params, many, context)
        # An ORM insert, update or delete: its compiler hook invalidates, and its text need
        # not be parsed to know that it writes.
        tx.mark_dirty(context["connection"])
        return result
    text = sql if isinstance(sql, str) else str(sql)
    try:
        result = execute(sql, params, many, context)
    except BaseException:
        if rawsql.several(text):
            # The statements before the one that failed ran, and a COMMIT among them made
            # their writes stay: invalidate as if the text had run (never less than it wrote).
            with contextlib.suppress(Exception):
                _after_raw(context["connection"], text)
        raise
    _after_raw(context["connection"], text)
    return result


_TX_HEADS = ("beg", "sta", "com", "end", "rol", "abo", "pre")


def _after_raw(connection: BaseDatabaseWrapper, sql: str) -> None:
    """Follow what a raw statement did to the transaction, and invalidate what it wrote."""
    head = sql.lstrip()[:3].lower()
    if head[:2] in ("/*", "--") or head[:1] == "(":
        head = rawsql.first_word(sql)[:3]
    several = rawsql.several(sql)
    if (
        head in ("set", "beg", "sta")
        or "set_config" in sql
        or "SET_CONFIG" in sql
        or (several and "isolation" in sql.lower())
    ):
        tx.note_isolation(connection, sql)
    # Only these can open or end a transaction; the driver then says what they did.
    inside = tx.driver_in_transaction(connection) if head in _TX_HEADS or several else None
    if inside is None:
        if head in _TX_HEADS:
            tx.note_raw_transaction(connection, sql)
    else:
        tx.follow_driver(connection, inside)
    tables = rawsql.written_tables(sql)
    if tables is not rawsql.READ and tables:
        _invalidate_raw(connection, tables)
    if inside is False:
        # A lone ROLLBACK drops what it rolled back; otherwise (a COMMIT, or several
        # statements) the writes so far are delivered.
        rolled_back = not several and tx.is_raw_rollback(sql)
        tx.ended_by_driver(connection, committed=not rolled_back)
    elif inside and rawsql.commits(sql):
        tx.committed_within(connection)
        if tables is not rawsql.READ and tables:
            _invalidate_raw(connection, tables)  # what it wrote after its COMMIT waits again


def _invalidate_raw(connection: BaseDatabaseWrapper, tables: tuple[str, ...]) -> None:
    tx.mark_dirty(connection)
    if tables != rawsql.ALL:
        tables = rawsql.model_tables(tables, connection.vendor)
        # A raw delete sets off the database-level on_delete of the tables' referencing rows.
        tables = tuple(dict.fromkeys((*tables, *dbcascade.tables_below(tables))))
    if not invalidation.active():
        invalidation.skipped(connection.alias, tables)
        return
    if tables == rawsql.ALL:
        invalidation.request_all(connection.alias)
    else:
        invalidation.invalidate_tables(tables, connection.alias)


def _add_wrapper(connection: BaseDatabaseWrapper) -> None:
    """First in the list (the outermost wrapper): a connection may open inside ``with
    connection.execute_wrapper(w):`` (ours for RETURNING, or the user's), whose exit pops
    the *last* wrapper; appended, ours would be the one popped, for the connection's life."""
    if raw_write_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, raw_write_wrapper)


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    _add_wrapper(connection)


# -- install / uninstall --------------------------------------------------------------------------


def installed() -> bool:
    return bool(_patched)


def _manager_proxy(name: str) -> Callable[..., Any]:
    def method(self: BaseManager[Any], *args: Any, **kwargs: Any) -> Any:
        return getattr(self.get_queryset(), name)(*args, **kwargs)

    method.__name__ = name
    return method


def install() -> None:
    """Apply every patch once; calling it again does nothing."""
    if _patched:
        return
    _wrap(sql_compiler.SQLCompiler, "execute_sql", _select_execute)
    _wrap(sql_compiler.SQLInsertCompiler, "execute_sql", _insert_execute)
    _wrap(sql_compiler.SQLUpdateCompiler, "execute_sql", _update_execute)
    _wrap(Model, "_do_update", _save_update)
    _wrap(QuerySet, "_fetch_all", queryset.fetch_scope)
    _wrap(QuerySet, "get", queryset.fast_get_scope)
    for name in ("first", "last"):
        _wrap(QuerySet, name, queryset.get_scope)
    for name in ("count", "exists", "aggregate"):
        _wrap(QuerySet, name, functools.partial(queryset.chain_op_scope, op=name))
    for name in ("filter", "exclude", "order_by", "select_related", "all", "__getitem__"):
        _wrap(QuerySet, name, chains.recording(name))
    _add(QuerySet, "cache", queryset.cache)
    _add(QuerySet, "nocache", queryset.nocache)
    _add(QuerySet, "invalidated_update", invalidation.invalidated_update)
    for name in ("cache", "nocache", "invalidated_update"):
        _add(BaseManager, name, _manager_proxy(name))
    _wrap(BaseDatabaseWrapper, "commit", _ends_transaction(committed=True))
    _wrap(BaseDatabaseWrapper, "rollback", _ends_transaction(committed=False))
    _wrap(BaseDatabaseWrapper, "close", _ends_transaction(committed=False))
    _wrap(BaseDatabaseWrapper, "set_autocommit", _set_autocommit)
    _wrap(BaseDatabaseWrapper, "run_and_clear_commit_hooks", _commit_hooks)
    _install_admin()
    connection_created.connect(_on_connection_created, dispatch_uid="freshcache.install")
    for connection in connections.all(initialized_only=True):
        _add_wrapper(connection)


def _install_admin() -> None:
    from django.apps import apps

    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.options import ModelAdmin

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def get_queryset(self: Any, request: Any) -> Any:
            return original(self, request).nocache()

        return get_queryset

    _wrap(ModelAdmin, "get_queryset", make)


def uninstall() -> None:
    """Undo every patch, newest first (tests, or an app that wants Django untouched)."""
    while _patched:
        owner, name, original = _patched.pop()
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    connection_created.disconnect(dispatch_uid="freshcache.install")
    for connection in connections.all(initialized_only=True):
        if raw_write_wrapper in connection.execute_wrappers:
            connection.execute_wrappers.remove(raw_write_wrapper)
