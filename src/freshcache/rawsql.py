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

__all__ = ["ALL", "READ", "commits", "first_word", "model_tables", "several", "written_tables"]

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
#: Literals, dollar-quoted bodies and comments, leftmost first.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$|--[^\n]*|/\*.*?\*/", re.S)
_PREPARED = re.compile(r"\w+\s+prepared\b", re.I)
#: Words that start (or run) a write; searched for in texts of several statements.
_ANY_WRITE = re.compile(
    r"\b(insert|update|delete|merge|truncate|drop|alter|copy|replace|upsert|call|do|exec"
    r"|execute|refresh|import|load)\b",
    re.I,
)


def _table(name: str) -> str:
    """The unqualified table name as the database sees it (unquoted names fold to lowercase)."""
    last = re.findall(_IDENT, name)[-1]
    if last[0] in '"`[':
        return last[1:-1].replace('""', '"')
    return last.lower()


def several(sql: str) -> bool:
    """Whether the text may hold more than one statement: a ``;`` before its end, outside
    quotes and comments. With a backslash in the text (an escape in some literals, not in
    others) every ``;`` counts."""
    if ";" not in sql:
        return False
    return ";" in _unquoted(sql).rstrip().rstrip(";")


def _unquoted(sql: str) -> str:
    """The text with its literals and comments blanked (unless a backslash may escape a quote:
    then as it is, so that no ``;`` is ever taken for quoted)."""
    return sql if "\\" in sql else _QUOTED.sub(" ", sql)


def first_word(sql: str) -> str:
    """The statement's first keyword, lowercased, after leading comments and parentheses."""
    start = _LEADING.match(sql)
    word = _WORD.match(sql, start.end() if start else 0)
    return word.group(0).lower() if word else ""


def commits(sql: str) -> bool:
    """Whether a statement of the text is a ``COMMIT`` (or, alone, an ``END``): with the
    connection still in a transaction afterwards, it was ``COMMIT AND CHAIN`` or a ``BEGIN``
    followed it. An ``END`` among several statements does not count: SQLite triggers and
    PostgreSQL's ``BEGIN ATOMIC`` bodies close with it, and their writes are not committed."""
    lowered = sql.lower()
    if "commit" not in lowered and "end" not in lowered:
        return False
    pieces = _unquoted(sql).split(";") if several(sql) else [sql]
    words = ("commit",) if len(pieces) > 1 else ("commit", "end")
    for piece in pieces:
        if first_word(piece) in words:
            start = _LEADING.match(piece)
            if not _PREPARED.match(piece, start.end() if start else 0):
                return True
    return False


def written_tables(sql: str) -> tuple[str, ...]:
    """``READ``, ``ALL``, or the tables the statement writes.

    A text of several statements (the driver runs them all) is cut at every ``;`` outside
    literals and comments. A write's keyword anywhere in the text (quoted or not), or a piece
    that is not a read, gives ``ALL``: which tables each statement writes is not worth a
    parser, and a keyword search cannot be fooled by a literal that was misread.
    """
    if several(sql):
        if _ANY_WRITE.search(sql) or any(_one(piece) for piece in _unquoted(sql).split(";")):
            return ALL
        return READ
    return _one(sql)


def _one(sql: str) -> tuple[str, ...]:
    start = _LEADING.match(sql)
    lead = start.group(0) if start else ""
    if "/*" in lead and lead.count("/*") != lead.count("*/"):
        # PostgreSQL's block comments nest: the first ``*/`` may not end the comment, and
        # the word after it may not be the statement's.
        return ALL if sql.strip() else READ
    rest = sql[len(lead) :]
    word_match = _WORD.match(rest)
    if not word_match:
        return ALL if rest.strip() else READ
    word = word_match.group(0).lower()
    if word in ("with", "explain") or (word == "select" and " into " in rest.lower()):
        return ALL if _MULTI_WRITE.search(rest) or word == "select" else READ
    if word in ("commit", "rollback") and _PREPARED.match(rest):
        return ALL  # a two-phase transaction's writes, made earlier, maybe elsewhere
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
#: The installed models' tables by the name a statement may give them: exact, and lowercased.
_by_name: tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]] | None = None


def _forget(**kwargs: Any) -> None:
    global _by_name
    _by_name = None


class_prepared.connect(_forget, dispatch_uid="freshcache.rawsql")


def model_tables(tables: tuple[str, ...], vendor: str) -> tuple[str, ...]:
    """``tables`` with the installed models' tables they mean.

    Stamps are named after ``db_table`` as the model spells it. A model may name its schema
    (``db_table = '"public"."blog_post"'``), which a statement need not (``UPDATE blog_post``);
    and SQLite (and MySQL on case-insensitive file systems) take ``UPDATE blog_Post`` for
    ``"blog_post"``. A schema a statement names is not compared: another schema's table of
    the same name invalidates too, which is only coarser."""
    global _by_name
    if _by_name is None:
        exact: dict[str, tuple[str, ...]] = {}
        lower: dict[str, tuple[str, ...]] = {}
        for model in apps.get_models(include_auto_created=True):
            table = model._meta.db_table
            # Django quotes db_table as one name unless it comes quoted (schema and table).
            name = _table(table) if table[:1] in '"`[' else table
            exact[name] = (*exact.get(name, ()), table)
            lower[name.lower()] = (*lower.get(name.lower(), ()), table)
        _by_name = exact, lower
    caseless = vendor in _CASELESS
    index = _by_name[1] if caseless else _by_name[0]
    found = dict.fromkeys(tables)
    for table in tables:
        found.update(dict.fromkeys(index.get(table.lower() if caseless else table, ())))
    return tuple(found)
