"""A miss of a known chain sends the statement its first read compiled, without Django.

A chain (:mod:`freshcache.chains`) names its statement: on a hit its key is found without
building the query or compiling it. A miss, though, went through all of Django's
machinery (``aggregate()`` builds an aggregation query, every read compiles) and then through
freshcache's general path, which together cost more CPU than the query itself. Yet the chain's
memo entry is per chain *and values*, so its statement is fixed: the text and parameters the
first read compiled. A miss sends those on the connection's cursor and shapes the rows exactly
as ``SQLCompiler.execute_sql`` returns them (``fetchone()`` cut to the selected columns for a
single row; every row, cut where the compiler had extra columns, for many), which is what the
general path stores and what a hit is built from.

Taken only when nothing could make that differ: the compiler that learned the statement runs
Django's own ``execute_sql`` under freshcache's wrapper alone (:mod:`freshcache.wrapped`), and
the read needs none of the general path's extras (no dog-pile lock, no capture, no
process-local copy). The stamps are read before the statement and the rows stored against them,
as on any miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.constants import MULTI, SINGLE

from freshcache import transaction as tx
from freshcache.queryset import store_rows
from freshcache.signals import cache_read
from freshcache.store import Plan, store
from freshcache.wrapped import compilers_are_ours

__all__ = ["Statement", "learn", "ready", "run"]


@dataclass(frozen=True)
class Statement:
    """A compiled read: its text and parameters, whether it reads one row, and where its rows
    are cut (the compiler's ``col_count``; None: not cut)."""

    sql: str
    params: tuple[Any, ...]
    single: bool
    cut: int | None


def learn(compiler: Any, result_type: str, sql: str, params: Sequence[Any]) -> Statement | None:
    """The statement a compiler that has just run ``sql`` sends, if sending it directly is
    what its ``execute_sql`` would do."""
    if (
        type(compiler).execute_sql is not SQLCompiler.execute_sql
        or not compilers_are_ours()
        or result_type not in (SINGLE, MULTI)
        or not sql
    ):
        return None
    if result_type == SINGLE:
        return Statement(sql, tuple(params), True, compiler.col_count)
    cut = compiler.col_count if compiler.has_extra_select else None
    return Statement(sql, tuple(params), False, cut)


def run(
    statement: Statement,
    connection: Any,
    key: str,
    plan: Plan,
    probe: Any,
    timeout: int,
    model: Any,
) -> Any:
    """The rows of the statement as ``execute_sql`` returns them, stored under ``key`` with
    the stamps ``probe`` read before it. Call only while :func:`ready`."""
    tokens = store.prepare(probe, timeout) if tx.can_store(connection) else None
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, statement.params)
        if statement.single:
            row = cursor.fetchone()
            payload: Any = row[0 : statement.cut] if row else row
        else:
            rows = cursor.fetchall()
            cut = statement.cut
            payload = rows if cut is None else [r[:cut] for r in rows]
    if tokens is not None:
        store_rows(key, tokens, payload, timeout, plan, probe, wait=False)
    cache_read.send(sender=model, func=None, hit=False)
    return payload


#: Whether a statement learned may be sent now (nothing wrapped the compilers since).
ready = compilers_are_ours
