"""``save()`` of an existing row sent without a queryset, an ``UpdateQuery`` or the compiler.

Django updates a row on ``save()`` by building ``filter(pk=...)`` on the base manager, an
``UpdateQuery`` holding every field's value and its compiler, on every call; freshcache then
reads the compiled text back to send its guarded form (:mod:`freshcache.returning`). All of
that costs more CPU than PostgreSQL spends on the statement, for a text that depends only on the
model, the fields written and which of their values are NULL. So the guarded text is learned
from Django's own compiler once per such shape, and later saves of the shape prepare each value
as the compiler does (``get_db_prep_save``) and send the text learned.

Safe by construction rather than by care:

* the shape names everything the text depends on: the model, the database and its connection
  class, the fields written (in order), which prepared values are NULL, the columns the table's
  schemes need and the columns written through;
* a shape is learned by compiling the save as Django would, and taken only if the compiler's
  parameters equal this module's, in value and type, and the statement has the guarded form;
  otherwise every save of the shape goes Django's way;
* only plain values qualify (no expression, no model instance, nothing that compiles to SQL), on
  a model without parents and without ``select_on_save``, through a base manager whose queryset
  is Django's own class with a fresh query, on PostgreSQL, and (Django 6) with nothing to return;
* the statement runs on the connection's cursor: execute wrappers, query logging and error
  translation are Django's; what comes back is read and invalidated as the guarded statement's
  of the general path is, by the same functions.

When the guarded statement updates nothing (the row is gone, or a needed column changes) the
save goes Django's way, without sending the guarded form a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections
from django.db.models.sql import UpdateQuery
from django.db.models.sql.query import Query

from freshcache import fastget, invalidation, returning, writethrough
from freshcache.conf import settings
from freshcache.memo import Memo
from freshcache.prepared import where_allowed
from freshcache.wrapped import compilers_are_ours

__all__ = ["update"]

NOT_HANDLED: Any = object()
_AGAIN: Any = object()

#: QuerySet members the update goes through; a base queryset class overriding any of them is
#: not ours to skip.
_QS_METHODS = ("filter", "_filter_or_exclude", "_filter_or_exclude_inplace", "_update",
               "_chain", "_clone")  # fmt: skip
#: By shape: the guarded text, how many columns it returns, its repeated parameters and whether
#: NULLs are written into the text (see :func:`_learn`); None: the shape is not fast.
_texts: Memo[tuple[Any, ...], tuple[str, int, list[int], bool] | None] = Memo()


def update(
    base_qs: Any,
    using: str,
    pk_val: Any,
    values: Sequence[tuple[Any, Any, Any]],
    forced_update: Any,
    returning_fields: Sequence[Any] | None,
    orm: Callable[[Callable[[], Any]], Any],
    django: Callable[[], Any],
) -> Any:
    """What ``Model._do_update`` returns for this update: sent here if it has a fast shape,
    else by ``django`` (Django's own ``_do_update``, with our hooks). ``orm`` runs a callable
    as an ORM write (:mod:`freshcache.install`); ``returning_fields`` is Django 6's argument
    (None before)."""
    sent = _fast(base_qs, using, pk_val, values, forced_update, returning_fields, orm)
    if sent is NOT_HANDLED:
        return django()
    if sent is _AGAIN:
        token = returning.unguarded.set(True)
        try:
            return django()
        finally:
            returning.unguarded.reset(token)
    return sent


def _fast(
    base_qs: Any,
    using: str,
    pk_val: Any,
    values: Sequence[tuple[Any, Any, Any]],
    forced_update: Any,
    returning_fields: Sequence[Any] | None,
    orm: Callable[[Callable[[], Any]], Any],
) -> Any:
    """The result, :data:`NOT_HANDLED` (nothing sent) or :data:`_AGAIN` (the guarded form
    updated nothing)."""
    if not settings.ENABLED or not values or returning_fields or not compilers_are_ours():
        return NOT_HANDLED
    model = base_qs.model
    opts = model._meta
    if opts.parents or (opts.select_on_save and not forced_update):
        return NOT_HANDLED
    connection = connections[using]
    if connection.vendor != "postgresql" or not invalidation.active():
        return NOT_HANDLED
    query = base_qs.query
    shape = fastget.shape_of(model)
    if (
        shape is None
        or type(query) is not Query
        or base_qs._sticky_filter
        or base_qs._defer_next_filter
        or base_qs._deferred_filter is not None
        or not fastget.overrides_none(type(base_qs), _QS_METHODS)
        or not fastget.pristine(query, shape)
    ):
        return NOT_HANDLED
    needed = invalidation.needed_fields(model, using)
    if not needed or not needed[0]:
        return NOT_HANDLED  # no schemes, or none known: the general path decides
    pk = opts.pk
    try:  # Django names the row before it prepares the values: its errors come in that order
        key_param = pk.get_db_prep_value(pk.get_prep_value(pk_val), connection, prepared=True)
    except Exception:  # Django's own path raises the error users expect
        return NOT_HANDLED
    prepped: list[Any] = []
    names: list[str] = []
    for field, _model, value in values:
        if (
            hasattr(value, "resolve_expression")
            or hasattr(value, "prepare_database_save")
            or getattr(field, "generated", False)
        ):
            return NOT_HANDLED
        value = field.get_db_prep_save(value, connection=connection)
        if hasattr(value, "as_sql"):
            return NOT_HANDLED
        names.append(field.attname)
        prepped.append(value)
    through = writethrough.pending(model, connection, keep=True)
    whole = through[1] if through is not None else ()
    key = (model, using, type(connection), tuple(names), tuple(v is None for v in prepped),
           tuple(f.column for f in needed[0]), len(whole))  # fmt: skip
    learned = _texts.get(key, NOT_HANDLED)
    if learned is NOT_HANDLED:
        learned = _texts.put(key, _learn(base_qs, pk_val, values, prepped, key_param,
                                         needed[0], whole))  # fmt: skip
    if learned is None:
        return NOT_HANDLED
    writethrough.taken()
    text, width, picks, inlines_null = learned
    sent = [v for v in prepped if v is not None] if inlines_null else prepped
    sent.append(key_param)
    params = (*sent, *(sent[i] for i in picks))

    def run() -> tuple[list[Any] | None, int]:
        with where_allowed(connection), connection.cursor() as cursor:
            cursor.execute(text, params)
            # An execute wrapper may have sent statements of its own with ours (a context
            # ``SELECT set_config(...)`` in front): the cursor then stands on another result.
            # Ours is an UPDATE that reports as many rows as it returns, each ``width`` wide.
            status = cursor.statusmessage or ""
            if not status.startswith("UPDATE "):
                return None, cursor.rowcount
            rows = list(cursor.fetchall())
            ours = status == f"UPDATE {len(rows)}" and all(len(r) == width for r in rows)
            return (rows if ours else None), cursor.rowcount

    rows, count = orm(run)
    if rows is None:  # not our statement's rows: what it wrote is unknown
        invalidation.invalidate_returned(model, connection, needed, None, None, None, None)
    elif not rows:
        return _AGAIN
    else:
        count = len(rows)
        old, new, written = returning.guarded_rows(connection, needed[0], bool(whole), rows)
        invalidation.invalidate_returned(model, connection, needed, through, old, new, written)
    return [()] * max(count, 0) if returning_fields is not None else count > 0


def _learn(
    base_qs: Any,
    pk_val: Any,
    values: Sequence[tuple[Any, Any, Any]],
    prepped: list[Any],
    key_param: Any,
    fields: list[Any],
    whole: Sequence[Any],
) -> tuple[str, int, list[int], bool] | None:
    """The guarded form of the statement Django compiles for this save (its text, how many
    columns it returns and its repeated parameters) and whether the compiler writes NULL into
    the text (Django before 6.1) rather than sending it; None, and the shape is never fast,
    unless the compiler's parameters are the values :func:`_fast` prepared and no field writes
    a placeholder of its own."""
    if any(
        hasattr(f, "get_placeholder") or hasattr(f, "get_placeholder_sql") for f, _, _ in values
    ):
        return None
    try:
        query = base_qs.filter(pk=pk_val).query.chain(UpdateQuery)
        query.add_update_fields(values)
        query.annotations = {}
        compiler = query.get_compiler(base_qs.db)
        connection = compiler.connection
        sql, params = compiler.as_sql()
    except Exception:  # Django's own path raises what users expect
        return None
    if not sql or getattr(query, "related_updates", None):
        return None
    params = tuple(params)
    for inlines_null in (True, False):
        sent = [v for v in prepped if v is not None] if inlines_null else list(prepped)
        sent.append(key_param)
        if len(params) == len(sent) and all(map(_same, params, sent)):
            guard = returning.guarded_form(compiler, connection, sql, params, fields, whole)
            return None if guard is None else (guard[0], len(guard[1]), guard[2], inlines_null)
    return None


def _same(a: Any, b: Any) -> bool:
    """Whether two prepared values are the same: equal and of one type, or, for a type without
    equality of its own (psycopg's ``Jsonb`` wraps what a ``JSONField`` sends), holding equal
    attributes."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        if type(a).__eq__ is not object.__eq__:
            return bool(a == b)
        return _state(a) == _state(b)
    except Exception:  # a comparison that raises is not a proof
        return False


def _state(value: Any) -> tuple[Any, ...]:
    slots: list[str] = []
    for klass in type(value).__mro__:
        names = getattr(klass, "__slots__", ())
        slots.extend([names] if isinstance(names, str) else names)
    return (tuple(getattr(value, s, None) for s in slots), getattr(value, "__dict__", None))
