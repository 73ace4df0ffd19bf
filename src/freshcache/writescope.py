"""Whether the rows a write touches are pinned by locking them: its WHERE reads no other rows.

An ``UPDATE`` or ``DELETE`` is invalidated from its rows' old values, read just before it with
the rows locked (:mod:`freshcache.invalidation`). The lock pins the set of rows the statement
will touch only when its condition reads nothing but those rows. A join or a subquery reads
rows the lock does not hold: a transaction that commits a change to them in between can make
the statement touch a row the read did not see while skipping one it saw, with the same count,
and the unseen row's stamps would survive. Such a write is invalidated as a whole table.
"""

from __future__ import annotations

from typing import Any

from django.db.models.expressions import RawSQL
from django.db.models.sql.query import Query
from django.db.models.sql.where import ExtraWhere

__all__ = ["reads_other_rows"]


def reads_other_rows(query: Query) -> bool:
    """Whether ``query``'s condition joins another table or holds a subquery or raw SQL."""
    # Not ``query.base_table``: a cached property, which would keep ``None`` for a query
    # that has no alias yet (``Model.objects.update()``) and break its compilation.
    if sum(1 for count in query.alias_refcount.values() if count) > 1:
        return True
    stack: list[Any] = [query.where]
    while stack:
        node = stack.pop()
        if isinstance(node, (Query, RawSQL, ExtraWhere)):
            return True
        if isinstance(getattr(node, "query", None), Query):  # Subquery, Exists
            return True
        stack.extend(getattr(node, "children", ()))
        if hasattr(node, "get_source_expressions"):
            stack.extend(e for e in node.get_source_expressions() if e is not None)
    return False
