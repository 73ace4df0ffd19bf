"""Which tables a raw SQL statement writes, for writes that bypass the ORM.

This runs on every statement a connection executes (as an execute wrapper), so the common case,
a read, is decided by looking at the first keyword only. A statement that may write but whose
tables cannot be named with certainty yields ``ALL``: the caller then invalidates everything for
the database. Coarse is acceptable; missing a write is not.
"""

from __future__ import annotations

import re
from typing import Any

from django.apps import apps
from django.db.models.signals import class_prepared

__all__ = ["ALL", "READ", "model_tables", "written_tables"]

#: Sentinel: the statement may write to tables we cannot name.
ALL = ("*",)
#: Sentinel: the statement does not write data.
READ: tuple[str, ...] = ()

_HARMLESS = frozenset(
    [
        "select",
        "values",
        "explain",
        "show",
        "set",
        "reset",
        "begin",
        "start",
        "commit",
        "end",
        "rollback",
        "abort",
        "savepoint",
        "release",
        "pragma",
        "vacuum",
        "analyze",
        "analyse",
        "grant",
        "revoke",
        "lock",
        "listen",
        "unlisten",
        "notify",
        "declare",
        "fetch",
        "close",
        "move",
        "deallocate",
        "prepare",
        "discard",
        "checkpoint",
        "comment",
        "create",
        "use",
        "describe",
        "desc",
    ]
)
_LEADING = re.compile(r"\s*(?:(?:--[^\n]*\n)|(?:/\*.*?\*/)|\(|\s)*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")
_IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][\w$]*)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
_WRITES = {
    "insert": re.compile(rf"insert\s+(?:or\s+\w+\s+)?(?:ignore\s+)?(?:into\s+)?({_NAME})", re.I),
    "replace": re.compile(rf"replace\s+(?:into\s+)?({_NAME})", re.I),
    "update": re.compile(rf"update\s+(?:or\s+\w+\s+)?(?:only\s+)?({_NAME})", re.I),
    "delete": re.compile(rf"delete\s+from\s+(?:only\s+)?({_NAME})", re.I),
    "alter": re.compile(rf"alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?({_NAME})", re.I),
    "copy": re.compile(rf"copy\s+({_NAME})(?:\s*\([^)]*\))?\s+from\b", re.I),
}
_LISTS = {
    "truncate": re.compile(rf"truncate\s+(?:table\s+)?(?:only\s+)?((?:{_NAME}\s*,?\s*)+)", re.I),
    "drop": re.compile(rf"drop\s+table\s+(?:if\s+exists\s+)?((?:{_NAME}\s*,?\s*)+)", re.I),
}
_MULTI_WRITE = re.compile(r"\b(insert|update|delete|merge|truncate)\b", re.I)


def _table(name: str) -> str:
    """The unqualified table name as the database sees it (unquoted names fold to lowercase)."""
    last = re.findall(_IDENT, name)[-1]
    if last[0] in '"`[':
        return last[1:-1].replace('""', '"')
    return last.lower()


def written_tables(sql: str) -> tuple[str, ...]:
    """``READ``, ``ALL``, or the tables the statement writes."""
    start = _LEADING.match(sql)
    rest = sql[start.end() if start else 0 :]
    word_match = _WORD.match(rest)
    if not word_match:
        return ALL if rest.strip() else READ
    word = word_match.group(0).lower()
    if word in ("with", "explain") or (word == "select" and " into " in rest.lower()):
        return ALL if _MULTI_WRITE.search(rest) or word == "select" else READ
    if word in _HARMLESS:
        return READ
    if word in ("drop", "alter") and not re.match(r"\w+\s+table\b", rest, re.I):
        return READ  # indexes, constraints, sequences, views: the rows stay what they were
    pattern = _WRITES.get(word)
    if pattern is not None:
        match = pattern.match(rest)
        return (_table(match.group(1)),) if match else ALL
    listed = _LISTS.get(word)
    if listed is not None:
        match = listed.match(rest)
        if not match:
            return ALL
        names = re.findall(_NAME, match.group(1))
        if word == "truncate" and any(n.lower() == "cascade" for n in names):
            return ALL  # every table referencing these, by any foreign key, goes with them
        return tuple(_table(n) for n in names if n.lower() not in ("cascade", "restrict"))
    return ALL


#: Databases whose table names match whatever their case, quoted or not.
_CASELESS = frozenset({"sqlite", "mysql"})
_by_lower: dict[str, tuple[str, ...]] | None = None


def _forget(**kwargs: Any) -> None:
    global _by_lower
    _by_lower = None


class_prepared.connect(_forget, dispatch_uid="freshcache.rawsql")


def model_tables(tables: tuple[str, ...], vendor: str) -> tuple[str, ...]:
    """``tables`` with the installed models' tables they mean: SQLite (and MySQL on
    case-insensitive file systems) take ``UPDATE blog_Post`` for ``"blog_post"``."""
    global _by_lower
    if vendor not in _CASELESS:
        return tables
    if _by_lower is None:
        by_lower: dict[str, tuple[str, ...]] = {}
        for model in apps.get_models(include_auto_created=True):
            table = model._meta.db_table
            by_lower[table.lower()] = (*by_lower.get(table.lower(), ()), table)
        _by_lower = by_lower
    found = dict.fromkeys(tables)
    for table in tables:
        found.update(dict.fromkeys(_by_lower.get(table.lower(), ())))
    return tuple(found)
