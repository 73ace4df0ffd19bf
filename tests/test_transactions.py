"""Transactions: deferred invalidation, dirty connections, rollbacks, no leaked state."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import Client

from freshcache import transaction as tx
from freshcache.signals import cache_invalidated
from tests.conftest import on_another_connection
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture
def c1() -> Category:
    return Category.objects.create(title="one", slug="one")


@pytest.fixture
def invalidations() -> Any:
    seen: list[str] = []

    def receiver(sender: Any, table: str, **kwargs: Any) -> None:
        seen.append(table)

    cache_invalidated.connect(receiver)
    yield seen
    cache_invalidated.disconnect(receiver)


def titles(using: str = "default", **filters: Any) -> list[str]:
    return [p.title for p in Post.objects.using(using).filter(**filters)]


def test_invalidation_runs_at_commit(c1: Category, invalidations: list[str]) -> None:
    p = Post.objects.create(title="a", category=c1)
    invalidations.clear()
    with transaction.atomic():
        p.title = "b"
        p.save()
        assert invalidations == []
    assert "testapp_post" in invalidations
    assert titles(category=c1) == ["b"]


def test_dirty_connection_neither_reads_nor_fills(
    c1: Category, queries: Any, invalidations: list[str]
) -> None:
    Post.objects.create(title="a", category=c1)
    assert titles(category=c1) == ["a"]
    with transaction.atomic():
        Post.objects.filter(category=c1).update(title="b")
        with queries() as q:
            assert titles(category=c1) == ["b"]  # own write visible: not from the cache
            assert titles(category=c1) == ["b"]
        assert q.count == 2  # neither read used nor filled the cache
    assert titles(category=c1) == ["b"]


def test_rollback_leaves_nothing(c1: Category, queries: Any, invalidations: list[str]) -> None:
    p = Post.objects.create(title="a", category=c1)
    assert titles(category=c1) == ["a"]
    invalidations.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        p.title = "b"
        p.save()
        raise RuntimeError
    assert invalidations == []
    with queries() as q:
        assert titles(category=c1) == ["a"]
    assert q.count == 0  # the cached value is still valid and right


def test_savepoint_rollback_drops_its_invalidations(c1: Category, invalidations: list[str]) -> None:
    c2 = Category.objects.create(title="two", slug="two")
    invalidations.clear()
    with transaction.atomic():
        Category.objects.filter(pk=c2.pk).update(title="2")
        try:
            with transaction.atomic():
                Post.objects.create(title="x", category=c1)
                raise RuntimeError
        except RuntimeError:
            pass
    assert invalidations == ["testapp_category"]


def test_our_invalidation_runs_before_user_on_commit(c1: Category) -> None:
    p = Post.objects.create(title="a", category=c1)
    assert titles(category=c1) == ["a"]
    seen: list[list[str]] = []
    with transaction.atomic():
        transaction.on_commit(lambda: seen.append(titles(category=c1)))
        p.title = "b"
        p.save()
    assert seen == [["b"]]


def test_no_leaked_state_after_exception(c1: Category, queries: Any) -> None:
    Post.objects.create(title="a", category=c1)
    with pytest.raises(ValueError), transaction.atomic():
        Post.objects.filter(category=c1).update(score=1)
        raise ValueError
    assert not tx.is_dirty(connection)
    with transaction.atomic():
        titles(category=c1)
        with queries() as q:
            titles(category=c1)
        if tx.can_store(connection):
            assert q.count == 0  # a clean new transaction uses the cache again


def test_atomic_requests(c1: Category, settings: Any) -> None:
    Post.objects.create(title="a", category=c1)
    assert titles(category=c1) == ["a"]
    connection.settings_dict["ATOMIC_REQUESTS"] = True
    try:
        response = Client().get(f"/write-then-read/{c1.pk}/")
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    assert response.content == b"renamed"
    assert titles(category=c1) == ["renamed"]


def test_several_databases(c1: Category) -> None:
    other_cat = Category.objects.using("other").create(title="o", slug="o")
    Post.objects.using("other").create(title="a", category=other_cat)
    assert titles("other", category=other_cat.pk) == ["a"]
    with transaction.atomic(using="other"):
        Post.objects.using("other").filter(title="a").update(title="b")
        # default's transaction state is untouched by other's writes
        assert not tx.is_dirty(connections["default"])
    assert titles("other", category=other_cat.pk) == ["b"]


def test_manual_transaction_management(c1: Category) -> None:
    p = Post.objects.create(title="a", category=c1)
    assert titles(category=c1) == ["a"]
    transaction.set_autocommit(False)
    try:
        Post.objects.filter(pk=p.pk).update(title="b")
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert titles(category=c1) == ["b"]


def test_isolation_above_read_committed_does_not_store(c1: Category, queries: Any) -> None:
    """Inside a snapshot transaction, results are not written to the cache."""
    Post.objects.create(title="a", category=c1)
    if connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            assert not tx.can_store(connection)
            titles(category=c1)
        with queries() as q:
            titles(category=c1)
        assert q.count == 1, "the snapshot read was not stored"
        with transaction.atomic():
            assert tx.can_store(connection), "the next transaction is READ COMMITTED again"
    else:
        # SQLite in WAL mode gives readers a snapshot: nothing is stored in a transaction.
        connection._freshcache_journal = "wal"  # type: ignore[attr-defined]
        try:
            with transaction.atomic():
                titles(category=c1)
                assert not tx.can_store(connection)
            with queries() as q:
                titles(category=c1)
            assert q.count == 1
        finally:
            del connection._freshcache_journal  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("statement", "snapshot"),
    [
        ("SET default_transaction_isolation = 'repeatable read'", True),
        ("SET SESSION default_transaction_isolation TO 'serializable'", True),
        ("SELECT set_config('default_transaction_isolation', 'repeatable read', false)", True),
        ("SELECT set_config('default_transaction_isolation', 'repeatable read', true)", False),
        ("SET LOCAL default_transaction_isolation = 'serializable'", False),
        ("SET default_transaction_isolation = 'read committed'", False),
    ],
)
def test_a_session_default_isolation_is_seen(statement: str, snapshot: bool) -> None:
    """The session's default isolation, set by SQL, decides whether later transactions read a
    snapshot; ``SET LOCAL`` and ``set_config(..., true)`` end with a transaction that was
    already under way. SQLite has no such setting: there the parser is checked alone."""
    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(statement)
        else:
            tx.note_isolation(connection, statement)
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SHOW transaction_isolation")
                    level = cursor.fetchone()[0]
                assert (level != "read committed") is snapshot, "precondition"
            assert tx.can_store(connection) is not snapshot
    finally:
        connection._freshcache_session_snapshot = False  # type: ignore[attr-defined]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET default_transaction_isolation")


def test_a_default_isolation_in_the_connection_options_is_seen() -> None:
    options = connection.settings_dict.setdefault("OPTIONS", {})
    had = options.get("options")
    try:
        options["options"] = r"-c default_transaction_isolation=repeatable\ read"
        assert tx._options_snapshot(connection)
        options["options"] = "-c default_transaction_isolation=read\\ committed -c x=1"
        assert not tx._options_snapshot(connection)
    finally:
        if had is None:
            options.pop("options", None)
        else:
            options["options"] = had


def _side_connection() -> Any:
    """A second, independent connection to the test database ("another process")."""
    params = connection.settings_dict
    if connection.vendor == "postgresql":
        import psycopg

        return psycopg.connect(
            host=params["HOST"],
            port=params["PORT"],
            user=params["USER"],
            dbname=params["NAME"],
            autocommit=True,
        )
    import sqlite3

    return sqlite3.connect(params["NAME"], uri=True, isolation_level=None)


def test_row_committed_between_pre_read_and_write(
    c1: Category, queries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that starts matching after the old-value read is written too: never stale."""
    from freshcache import invalidation

    Post.objects.create(title="a", category=c1)
    assert titles(score=7, title="phantom") == []
    side = _side_connection()
    original = invalidation._select_rows

    def read_then_someone_inserts(*args: Any, **kwargs: Any) -> Any:
        rows = original(*args, **kwargs)
        side.execute(
            "INSERT INTO testapp_post (title, category_id, visible, score) "
            f"VALUES ('phantom', {c1.pk}, true, 0)"
        )
        return rows

    monkeypatch.setattr(invalidation, "_select_rows", read_then_someone_inserts)
    try:
        Post.objects.filter(category=c1).update(score=7)
    finally:
        side.close()
    monkeypatch.undo()
    assert titles(score=7, title="phantom") == ["phantom"]


def test_classic_race_reader_stores_after_the_writer_invalidated(
    c1: Category, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reader queries (old rows), writer commits and invalidates, reader stores: the stored
    value must never be served. Driven step by step with a hook, not by timing."""

    from freshcache.store import store

    Post.objects.create(title="old", category=c1)
    reader_read = threading.Event()
    writer_done = threading.Event()
    original_save = store.save

    def save_after_the_write(*args: Any, **kwargs: Any) -> bool:
        if threading.current_thread().name == "reader":
            reader_read.set()  # the reader has its rows from the database
            assert writer_done.wait(10)  # ... and stores only after the write invalidated
        return original_save(*args, **kwargs)

    monkeypatch.setattr(store, "save", save_after_the_write)
    seen: list[list[str]] = []

    def reader() -> None:
        try:
            seen.append(titles(category=c1))
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader, name="reader")
    thread.start()
    assert reader_read.wait(10)
    Post.objects.filter(category=c1).update(title="new")  # commits and invalidates
    writer_done.set()
    thread.join(10)
    assert seen == [["old"]]  # the reader's own answer was right when it read
    monkeypatch.undo()
    assert titles(category=c1) == ["new"]  # and the value it stored is never served


def test_a_transaction_opened_with_raw_sql(queries: Any) -> None:
    """``BEGIN`` sent as SQL while Django is in autocommit mode: the write inside must neither
    be served from nor stored in the cache before ``COMMIT``, and ``ROLLBACK`` keeps nothing."""
    category = Category.objects.create(title="one", slug="one")

    def read() -> str:
        return Category.objects.get(pk=category.pk).title

    for end, expected in (("ROLLBACK", "one"), ("COMMIT", "two"), ("END", "three")):
        before = read()
        with queries() as q:
            assert read() == before
        assert q.count == 0, "precondition: the read is cached"
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            Category.objects.filter(pk=category.pk).update(title=expected.replace("one", "x"))
            assert read() == expected.replace("one", "x")  # its own write, not the cached row
            cursor.execute("SAVEPOINT s")
            cursor.execute("ROLLBACK TO SAVEPOINT s")  # the transaction goes on
            assert read() == expected.replace("one", "x")
            cursor.execute(end)
        assert read() == expected
        with queries() as q:
            assert read() == expected
        assert q.count == 0, "the cache is used again once the transaction ended"


def _cached_title(queries: Any, pk: int) -> str:
    """The title through the cache, checked to be served from it."""
    title = Category.objects.get(pk=pk).title
    with queries() as q:
        assert Category.objects.get(pk=pk).title == title
    assert q.count == 0, "precondition: the read is cached"
    return title


def test_a_raw_commit_inside_djangos_own_transaction(queries: Any) -> None:
    """``COMMIT`` sent as SQL in manual mode or inside ``atomic()`` makes the writes so far
    visible to everyone: their invalidations run then, not at a later end of Django's
    transaction that rolls back (which used to drop them and leave the old row cached)."""
    category = Category.objects.create(title="one", slug="one")
    _cached_title(queries, category.pk)
    transaction.set_autocommit(False)
    try:
        Category.objects.filter(pk=category.pk).update(title="two")
        with connection.cursor() as cursor:
            cursor.execute("COMMIT")
        connection.rollback()  # nothing left to roll back
    finally:
        transaction.set_autocommit(True)
    assert Category.objects.get(pk=category.pk).title == "two"

    _cached_title(queries, category.pk)
    with pytest.raises(RuntimeError), transaction.atomic():
        category.title = "three"
        category.save()
        with connection.cursor() as cursor:
            cursor.execute("/* app */ COMMIT")
        raise RuntimeError("the atomic block rolls back, after the raw COMMIT")
    assert Category.objects.get(pk=category.pk).title == "three"


def _run(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def _chain_then_roll_back(queries: Any, pk: int) -> None:
    """A write, ``COMMIT AND CHAIN``, a write in the chained transaction, ``ROLLBACK``: the
    first write stays and is read fresh; the second is neither served nor kept."""
    _cached_title(queries, pk)
    _run("BEGIN")
    Category.objects.filter(pk=pk).update(title="two")
    _run("COMMIT AND CHAIN")
    Category.objects.filter(pk=pk).update(title="rolled back")
    assert Category.objects.get(pk=pk).title == "rolled back"
    _run("ROLLBACK")
    assert Category.objects.get(pk=pk).title == "two"


def _commit_inside_atomic(queries: Any, pk: int, commit: str) -> None:
    """A write, then ``commit`` sent as SQL inside ``atomic()``, then the block rolls back: the
    write was committed and is read fresh."""
    _cached_title(queries, pk)
    with pytest.raises(RuntimeError), transaction.atomic():
        Category.objects.filter(pk=pk).update(title="three")
        _run(commit)
        raise RuntimeError("the atomic block rolls back, after the raw COMMIT")
    assert Category.objects.get(pk=pk).title == "three"


def test_a_commit_that_leaves_a_transaction_open(queries: Any) -> None:
    """``COMMIT AND CHAIN``, or ``COMMIT; BEGIN`` in one text, commits and opens the next
    transaction at once: the writes before it are delivered then, not dropped by a later
    ``ROLLBACK``; those after it wait for the next end."""
    if connection.vendor != "postgresql":
        return  # SQLite has neither AND CHAIN nor several statements in one text
    category = Category.objects.create(title="one", slug="one")
    table, pk = Category._meta.db_table, category.pk

    _chain_then_roll_back(queries, pk)

    _commit_inside_atomic(queries, pk, "COMMIT AND CHAIN")

    _cached_title(queries, pk)
    _run(f"BEGIN; UPDATE {table} SET title = 'four' WHERE id = {pk}; COMMIT; BEGIN")
    _run("ROLLBACK")
    assert Category.objects.get(pk=pk).title == "four"

    _cached_title(queries, pk)
    _run(f"BEGIN; UPDATE {table} SET title = 'five' WHERE id = {pk}; COMMIT AND CHAIN")
    _run(f"UPDATE {table} SET title = 'six' WHERE id = {pk}")
    assert Category.objects.get(pk=pk).title == "six"  # its own write, not the cached row
    _run("ROLLBACK")
    assert Category.objects.get(pk=pk).title == "five"
    _run(f"BEGIN; COMMIT; BEGIN; UPDATE {table} SET title = 'seven' WHERE id = {pk}")
    # Another connection caches the committed row.
    assert on_another_connection(lambda: Category.objects.get(pk=pk).title) == "five"
    _run("COMMIT")
    assert Category.objects.get(pk=pk).title == "seven"


def test_a_chained_commit_on_a_driver_that_does_not_say(monkeypatch: Any, queries: Any) -> None:
    """Where the driver does not report its transaction state (MySQL, Oracle), the statement's
    text is followed: ``COMMIT AND CHAIN`` in a raw transaction, ``COMMIT`` in Django's."""
    monkeypatch.setattr(tx, "driver_in_transaction", lambda connection: None)
    category = Category.objects.create(title="one", slug="one")
    pk = category.pk

    if connection.vendor == "postgresql":
        _chain_then_roll_back(queries, pk)

        _cached_title(queries, pk)
        _run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        _run("COMMIT AND CHAIN")  # the chained transaction is REPEATABLE READ too
        _run("SELECT 1")  # its snapshot is taken here
        on_another_connection(lambda: Category.objects.filter(pk=pk).update(title="snapshot"))
        assert Category.objects.get(pk=pk).title == "two"  # the snapshot's answer, not kept
        _run("COMMIT")
        assert Category.objects.get(pk=pk).title == "snapshot"

    _commit_inside_atomic(queries, pk, "COMMIT")


def test_a_connection_opened_inside_an_execute_wrapper_keeps_ours(queries: Any) -> None:
    """A new connection (a new thread's) whose first statement is a write (its ``get()``
    served from the cache) opens inside the RETURNING rewrite's ``execute_wrapper`` block; a
    user's block does the same. Our wrapper, added when the connection opens, must outlive
    the block: without it the connection's writes would not make it dirty, and a read after
    them would store rows that a rollback then undoes."""
    category = Category.objects.create(title="one", slug="one")
    pk = category.pk
    for opening in ("a save", "a user's wrapper"):
        _cached_title(queries, pk)

        def on_a_new_connection(opening: str = opening) -> str:
            if opening == "a save":
                Category.objects.get(pk=pk).save()  # a hit, then the first statement
            else:
                with connection.execute_wrapper(lambda execute, *args: execute(*args)):
                    Category.objects.nocache().count()
            with pytest.raises(RuntimeError), transaction.atomic():
                Category.objects.filter(pk=pk).update(title="rolled back")
                assert Category.objects.get(pk=pk).title == "rolled back"  # and not kept
                raise RuntimeError("roll back")
            return Category.objects.get(pk=pk).title

        assert on_another_connection(on_a_new_connection) == "one"
        assert Category.objects.get(pk=pk).title == "one"


def test_several_statements_in_one_text(queries: Any) -> None:
    """PostgreSQL runs every statement of the text: a write after a read, a transaction that
    opens and ends in it, or one it leaves open, are all followed. (SQLite's driver refuses
    such a text, and nothing runs.)"""
    category = Category.objects.create(title="one", slug="one")
    table, pk = Category._meta.db_table, category.pk

    def run(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    _cached_title(queries, pk)
    if connection.vendor != "postgresql":
        with pytest.raises(Exception, match="one statement at a time"):
            run(f"SELECT 1; UPDATE {table} SET title = 'two' WHERE id = {pk}")
        assert Category.objects.nocache().get(pk=pk).title == "one"
        return
    run(f"SELECT 1; UPDATE {table} SET title = 'two' WHERE id = {pk}")
    assert Category.objects.get(pk=pk).title == "two"

    _cached_title(queries, pk)
    run(f"BEGIN; UPDATE {table} SET title = 'three' WHERE id = {pk}; COMMIT")
    assert Category.objects.get(pk=pk).title == "three"
    # The connection is in autocommit again: an ORM write is invalidated at once.
    _cached_title(queries, pk)
    Category.objects.filter(pk=pk).update(title="four")
    assert Category.objects.get(pk=pk).title == "four"

    _cached_title(queries, pk)
    run(f"BEGIN; UPDATE {table} SET title = 'five' WHERE id = {pk}")
    assert Category.objects.get(pk=pk).title == "five"  # its own write, not the cached row
    run("SELECT 1; COMMIT")
    assert _cached_title(queries, pk) == "five"

    # Block comments nest on PostgreSQL: the first */ does not end this one.
    run(f"/* a /* b */ select */ UPDATE {table} SET title = 'six' WHERE id = {pk}")
    assert Category.objects.get(pk=pk).title == "six"

    # A failing statement after a COMMIT: the statements before it ran and stay.
    _cached_title(queries, pk)
    with pytest.raises(Exception, match="division by zero"):
        run(f"BEGIN; UPDATE {table} SET title = 'seven' WHERE id = {pk}; COMMIT; SELECT 1/0")
    assert Category.objects.get(pk=pk).title == "seven"
