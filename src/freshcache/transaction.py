"""Per-connection, per-transaction state: when a connection may use the cache, and when
invalidations run.

Two rules keep transactions from producing stale reads:

* A connection that wrote inside a transaction is *dirty* until the transaction ends: its reads
  neither use nor fill the cache, because the cache cannot hold its uncommitted view.
* Invalidations requested inside ``atomic()`` run when the outermost transaction commits, through
  Django's ``on_commit`` so that a rolled-back savepoint drops its own, and before the user's
  callbacks so those already see fresh data. Rollback leaves nothing behind.

State lives on the connection object and is cleared when the transaction ends (commit,
rollback, autocommit restored, close), so an exception inside ``atomic`` cannot leak it into
the next transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = [
    "can_store",
    "committed_within",
    "driver_in_transaction",
    "end_transaction",
    "ended_by_driver",
    "follow_driver",
    "in_transaction",
    "is_dirty",
    "is_raw_rollback",
    "mark_dirty",
    "note_isolation",
    "note_raw_transaction",
    "request",
    "run_commit_hooks_first",
]

Changes = Sequence[Any]  # Sequence[store.TableChange]; kept loose to avoid an import cycle


def in_transaction(connection: BaseDatabaseWrapper) -> bool:
    return (
        bool(connection.in_atomic_block)
        or not connection.get_autocommit()
        or getattr(connection, "_freshcache_raw", False)
    )


def mark_dirty(connection: BaseDatabaseWrapper) -> None:
    if in_transaction(connection):
        connection._freshcache_dirty = True


def is_dirty(connection: BaseDatabaseWrapper) -> bool:
    if not getattr(connection, "_freshcache_dirty", False):
        return False
    if in_transaction(connection):
        return True
    connection._freshcache_dirty = False
    return False


_ISOLATION = re.compile(r"isolation\s+level\s+(read\s+committed|read\s+uncommitted|\w+)", re.I)


def note_isolation(connection: BaseDatabaseWrapper, sql: str) -> None:
    """Watch statements that change the isolation level behind Django's back.

    ``SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`` (or ``BEGIN ... ISOLATION LEVEL``)
    makes the current transaction a snapshot; ``SET SESSION CHARACTERISTICS`` (or
    ``SET SESSION TRANSACTION``) does so for every later transaction on the connection.
    """
    match = _ISOLATION.search(sql)
    if not match:
        default = _DEFAULT_LEVEL.search(sql)
        if default is not None and not _LOCAL.search(sql):
            connection._freshcache_session_snapshot = _snapshot_level(default.group(1))
        return
    snapshot = match.group(1).lower().split()[-1] not in ("committed", "uncommitted")
    if "session" in sql.lower() or "global" in sql.lower():
        connection._freshcache_session_snapshot = snapshot
    else:
        connection._freshcache_snapshot = snapshot


#: ``SET [SESSION] default_transaction_isolation = '...'`` or ``TO '...'``, ``set_config(
#: 'default_transaction_isolation', '...', false)``, MySQL's ``transaction_isolation`` variable.
_DEFAULT_LEVEL = re.compile(r"transaction_isolation['\"]?\s*(?:=|\bto\b|,)\s*'([^']*)'", re.I)
#: ``SET LOCAL`` and ``set_config(..., true)`` last until the current transaction ends, and the
#: default they set is read only when the next one begins: no transaction sees it.
_LOCAL = re.compile(r"\bset\s+local\b|,\s*true\s*\)", re.I)


def _snapshot_level(level: str) -> bool:
    words = level.lower().replace("-", " ").replace("\\", "").split()
    return words not in (["read", "committed"], ["read", "uncommitted"], ["default"], [])


def _options_snapshot(connection: BaseDatabaseWrapper) -> bool:
    """PostgreSQL ``OPTIONS['options']``: ``-c default_transaction_isolation=repeatable\\ read``."""
    options = connection.settings_dict.get("OPTIONS", {}).get("options")
    if not isinstance(options, str) or "default_transaction_isolation" not in options:
        return False
    match = re.search(r"default_transaction_isolation\s*=\s*((?:\\ |[\w-])+)", options)
    return match is not None and _snapshot_level(match.group(1))


_RAW_BEGIN = re.compile(r"\s*(?:begin|start\s+transaction)\b", re.I)
_RAW_END = re.compile(
    r"\s*(commit|end|rollback|abort)(?:\s+(?:work|transaction))?(\s+and\s+(?:no\s+)?chain)?"
    r"\s*;?\s*$",
    re.I,
)


def note_raw_transaction(connection: BaseDatabaseWrapper, sql: str) -> None:
    """Follow a transaction opened with SQL (``BEGIN`` ... ``COMMIT``) while Django is in
    autocommit mode: until it ends, it is treated like ``set_autocommit(False)`` (writes make
    the connection dirty, invalidations wait for ``COMMIT`` and ``ROLLBACK`` drops them)."""
    end = _RAW_END.match(sql)  # ROLLBACK TO SAVEPOINT and COMMIT PREPARED do not match
    commit = end is not None and end.group(1).lower() in ("commit", "end")
    if connection.in_atomic_block or not connection.get_autocommit():
        # Django's own transaction (its SQLite BEGIN comes before it turns autocommit off).
        if commit:
            committed_within(connection)
        return
    if _RAW_BEGIN.match(sql):
        connection._freshcache_raw = True
        return
    if end is not None and getattr(connection, "_freshcache_raw", False):
        snapshot = getattr(connection, "_freshcache_snapshot", False)
        end_transaction(connection, committed=commit)
        if end.group(2) is not None and "no" not in end.group(2).lower():
            # AND CHAIN: the next transaction begins at once, at the same isolation level.
            connection._freshcache_raw = True
            connection._freshcache_snapshot = snapshot


def driver_in_transaction(connection: BaseDatabaseWrapper) -> bool | None:
    """Whether the database connection is inside a transaction, as the driver knows it from
    the server's last reply (no round trip); None where the driver does not say.

    Raw SQL can open or end a transaction any way it likes (several statements in one text,
    comments before ``COMMIT``, ``COMMIT`` inside Django's own transaction): the driver's state
    is what happened, whatever the text looked like.
    """
    raw = connection.connection
    if raw is None:
        return None
    if connection.vendor == "postgresql":
        pgconn = getattr(raw, "pgconn", None)  # psycopg 3
        status = pgconn.transaction_status if pgconn is not None else None
        if status is None and hasattr(raw, "get_transaction_status"):  # psycopg2
            status = raw.get_transaction_status()
        # libpq: 0 idle, 1 active, 2 in a transaction, 3 in a failed one, 4 unknown
        return None if status is None or status in (1, 4) else status != 0
    if connection.vendor == "sqlite":
        state = getattr(raw, "in_transaction", None)
        return None if state is None else bool(state)
    return None


def follow_driver(connection: BaseDatabaseWrapper, inside: bool) -> None:
    """Before a raw statement's invalidation is requested: a transaction the statement left
    open behind Django's autocommit is followed like ``BEGIN`` (its writes wait for its end)."""
    if inside and not connection.in_atomic_block and connection.get_autocommit():
        connection._freshcache_raw = True


def ended_by_driver(connection: BaseDatabaseWrapper, committed: bool = True) -> None:
    """After a raw statement the driver reports outside any transaction: whatever the
    connection's writes were waiting for has happened (a ``COMMIT``; a ``ROLLBACK`` too, when
    ``committed`` is true, is only some misses more). Inside Django's own transaction, a raw
    ``COMMIT`` has made its writes so far visible to everyone: their invalidations run now,
    not at a later end that might be a rollback."""
    if connection.in_atomic_block or not connection.get_autocommit():
        committed_within(connection)
    elif getattr(connection, "_freshcache_raw", False):
        end_transaction(connection, committed=committed)


def committed_within(connection: BaseDatabaseWrapper) -> None:
    """A raw statement committed, and the connection is (or will be) in a transaction again:
    ``COMMIT AND CHAIN``, ``COMMIT; BEGIN`` in one text, ``COMMIT`` inside Django's own
    transaction. The writes so far are visible to everyone, so their invalidations run now, not
    at a later end that may be a rollback. The connection stays dirty: a text may have written
    after its commit, and those writes wait for the next end."""
    error = run_commit_hooks_first(connection)
    pending: list[Callable[[], None]] = getattr(connection, "_freshcache_manual", None) or []
    connection._freshcache_manual = []
    late = _run_all(pending)  # runs even when the hooks failed
    error = error or late
    if error is not None:
        raise error


def is_raw_rollback(sql: str) -> bool:
    """Whether the statement is a lone ``ROLLBACK`` (or ``ABORT``) of the whole transaction."""
    end = _RAW_END.match(sql)
    return end is not None and end.group(1).lower() in ("rollback", "abort")


def end_transaction(connection: BaseDatabaseWrapper, committed: bool) -> None:
    """Called when a transaction ends: forget dirtiness; flush or drop manual-mode work."""
    connection._freshcache_raw = False
    connection._freshcache_dirty = False
    connection._freshcache_snapshot = False
    pending: list[Callable[[], None]] = getattr(connection, "_freshcache_manual", None) or []
    connection._freshcache_manual = []
    if committed:
        error = _run_all(pending)
        if error is not None:
            raise error


def _run_all(pending: list[Callable[[], None]]) -> Exception | None:
    """Run every pending invalidation; the first error, if any, once all have run (each
    failure is remembered by the store)."""
    error: Exception | None = None
    for func in pending:
        try:
            func()
        except Exception as exc:
            error = error or exc
    return error


def _isolation_allows_store(connection: BaseDatabaseWrapper) -> bool:
    """Whether a read inside a transaction sees every commit made before it started.

    Above READ COMMITTED a transaction reads a snapshot that can predate the stamps we read, so
    storing its result could pair old rows with fresh stamps.
    """
    if getattr(connection, "_freshcache_snapshot", False) or getattr(
        connection, "_freshcache_session_snapshot", False
    ):
        return False
    vendor = connection.vendor
    if vendor == "sqlite":
        mode = getattr(connection, "_freshcache_journal", None)
        if mode is None:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode")
                row = cursor.fetchone()
            mode = str(row[0]).lower() if row else "wal"
            connection._freshcache_journal = mode
        # Rollback-journal SQLite blocks writers while a reader's transaction holds its lock;
        # WAL gives the reader a snapshot instead.
        return mode != "wal"
    level = getattr(connection, "isolation_level", None)
    if vendor == "postgresql":
        if level is None and _options_snapshot(connection):
            return False
        # psycopg's IsolationLevel enum, an int, or None (the server default, READ COMMITTED)
        return level is None or str(getattr(level, "name", level)).upper().replace(" ", "_") in {
            "READ_COMMITTED",
            "1",
            "READ_UNCOMMITTED",
        }
    if vendor == "mysql":
        return str(level or "read committed").lower() in {"read committed", "read uncommitted"}
    return vendor == "oracle"


def can_store(connection: BaseDatabaseWrapper) -> bool:
    """Whether a result read now on ``connection`` may be written to the cache."""
    if not in_transaction(connection):
        return True
    if is_dirty(connection):
        return False
    return _isolation_allows_store(connection)


class _Pending:
    """An on_commit callback carrying invalidations, recognisable so they run first."""

    __slots__ = ("changes", "run")

    _freshcache = True

    def __init__(self, run: Callable[[Changes], None], changes: Changes) -> None:
        self.run = run
        self.changes = changes

    def __call__(self) -> None:
        self.run(self.changes)


def request(
    connection: BaseDatabaseWrapper, run: Callable[[Changes], None], changes: Changes
) -> None:
    """Run ``run(changes)`` now, or when the current transaction commits."""
    if connection.in_atomic_block:
        connection.on_commit(_Pending(run, changes))
    elif not connection.get_autocommit() or getattr(connection, "_freshcache_raw", False):
        pending = getattr(connection, "_freshcache_manual", None)
        if pending is None:
            pending = connection._freshcache_manual = []
        pending.append(_Pending(run, changes))
    else:
        run(changes)


def run_commit_hooks_first(connection: BaseDatabaseWrapper) -> Exception | None:
    """Run our pending invalidations, merged into one batch, before the user's callbacks.

    An error is returned rather than raised, so that the caller still runs the user's callbacks
    of this (committed) transaction before raising it: none may be left for the next commit.
    """
    hooks = connection.run_on_commit
    ours = [entry[1] for entry in hooks if isinstance(entry[1], _Pending)]
    if not ours:
        return None
    connection.run_on_commit = [entry for entry in hooks if not isinstance(entry[1], _Pending)]
    by_runner: dict[Callable[[Changes], None], list[Any]] = {}
    for pending in ours:
        by_runner.setdefault(pending.run, []).extend(pending.changes)
    error: Exception | None = None
    for run, changes in by_runner.items():
        try:
            run(changes)
        except Exception as exc:
            error = error or exc
    return error
