"""Prepared statements for freshcache's own statements, where the connection allows them.

Django turns psycopg's prepared statements off unless the database's ``OPTIONS`` set a
``prepare_threshold``: behind a transaction-pooling PgBouncer without prepared-statement
support, one client's statement could run under another's name. A project that sets it has
said its connections keep their statements; freshcache then runs the statements it writes itself
(the guarded ``save()``, the returning ``delete()``, the fast ``get()``'s fill) with the values
sent apart from the text, so that psycopg prepares them and PostgreSQL parses and plans each
once per connection instead of on every call, which is about half of what a short statement
costs it. Django's default cursor inlines the values into the text, leaving nothing to prepare.

Only statements whose every value is compared with, or assigned to, a column take this path:
PostgreSQL then infers each value's type from its column, as it does for Django's own
``server_side_binding`` option.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

__all__ = ["allowed", "prepared", "where_allowed"]

#: Django's two psycopg 3 cursor classes: (inlining, server-side binding).
_classes: list[tuple[Any, Any]] = []


def allowed(connection: Any) -> bool:
    """Whether ``connection`` (a Django connection) lets psycopg prepare statements, and its
    statements are not being logged: a logged statement keeps Django's text with the values
    in it (``DEBUG``, ``assertNumQueries``), which a prepared one leaves Django no way to show.
    """
    raw = connection.connection
    return (
        raw is not None
        and getattr(raw, "prepare_threshold", None) is not None
        and not connection.queries_logged
    )


@contextmanager
def prepared(connection: Any) -> Iterator[None]:
    """Cursors ``connection`` opens meanwhile send their values apart from the text (Django's
    cursor for ``server_side_binding``), so psycopg may prepare them; call only when
    :func:`allowed`. A connection already on that cursor needs nothing; one on a cursor class
    of the project's own (``OPTIONS["cursor_factory"]``) keeps it."""
    raw = connection.connection
    if not _classes:
        from django.db.backends.postgresql.base import Cursor, ServerBindingCursor

        _classes.append((Cursor, ServerBindingCursor))
    inlining, binding = _classes[0]
    if raw.cursor_factory is not inlining:
        yield
        return
    raw.cursor_factory = binding
    try:
        yield
    finally:
        raw.cursor_factory = inlining


def where_allowed(connection: Any, wanted: bool = True) -> AbstractContextManager[None]:
    """:func:`prepared` if ``wanted`` and :func:`allowed`; otherwise a context that changes
    nothing."""
    return prepared(connection) if wanted and allowed(connection) else nullcontext()
