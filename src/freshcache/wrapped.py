"""Whether Django's compilers are still as freshcache left them.

The fast paths that send a statement without Django's compiler (:mod:`freshcache.fastsave`,
:mod:`freshcache.directmiss`) skip ``execute_sql``. That is faithful only while ``execute_sql``
is Django's under freshcache's own wrapper: a profiler or another library that wrapped it since
expects to see every statement, so the fast paths then stand aside.
"""

from __future__ import annotations

from typing import Any

from django.db.models.sql.compiler import SQLCompiler, SQLUpdateCompiler

__all__ = ["compilers_are_ours"]

_MODULE = "django.db.models.sql.compiler"
#: The verdict for the methods last seen.
_verdict: dict[tuple[Any, Any], bool] = {}


def compilers_are_ours() -> bool:
    current = (SQLCompiler.execute_sql, SQLUpdateCompiler.execute_sql)
    known = _verdict.get(current)
    if known is None:
        known = all(
            getattr(f, "_freshcache", False)
            and getattr(getattr(f, "__wrapped__", None), "__module__", "") == _MODULE
            for f in current
        )
        _verdict.clear()
        _verdict[current] = known
    return known
