"""What a write sends to the database, and that the old values it learns invalidate exactly.

On PostgreSQL a write that names its rows by primary key returns their old values itself
(freshcache.returning): one statement. Every test here runs on PostgreSQL with psycopg 3's
client-side binding (Django's default) and with server-side binding. Elsewhere the rows are
read first. Each test reads through the cache before the write, so a wrong or missing
old value would leave a stale read behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import F

from tests.conftest import start_elsewhere
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)

_POSTGRESQL = "postgresql" in settings.DATABASES["default"]["ENGINE"]


@pytest.fixture(autouse=True, params=["client", "server"] if _POSTGRESQL else ["client"])
def binding(request: pytest.FixtureRequest) -> Iterator[str]:
    """The default connection with client-side (Django's default) or server-side binding."""
    if request.param == "client":
        yield request.param
        return
    options = connection.settings_dict.setdefault("OPTIONS", {})
    connection.close()
    options["server_side_binding"] = True
    # Django reads the option once per connection object (it decides how statements are
    # logged): as configured from the start.
    connection.features.__dict__.pop("uses_server_side_binding", None)
    try:
        yield request.param
    finally:
        connection.close()
        options.pop("server_side_binding", None)
        connection.features.__dict__.pop("uses_server_side_binding", None)


def statements(queries: Any, write: Any) -> list[str]:
    with queries() as q:
        write()
    return [x["sql"] for x in q.context.captured_queries]


def test_save_sends_one_statement_on_postgresql(queries: Any) -> None:
    """A save that keeps the needed columns sends one guarded statement; one that changes
    them, the guarded statement (which matches nothing) and then the locking one."""
    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(slug="one").title == "one"  # registers the slug scheme
    c.title = "uno"
    sent = statements(queries, c.save)
    if connection.vendor == "postgresql":
        assert len(sent) == 1, sent
        assert sent[0].startswith("UPDATE") and "IS NOT DISTINCT FROM" in sent[0]
        assert "RETURNING" in sent[0] and "FOR NO KEY UPDATE" not in sent[0]
    else:
        assert [s.split()[0] for s in sent] == ["SELECT", "UPDATE"], sent
    assert Category.objects.get(slug="one").title == "uno"
    c.slug = "uno"
    sent = statements(queries, c.save)
    if connection.vendor == "postgresql":
        assert len(sent) == 2, sent
        assert "IS NOT DISTINCT FROM" in sent[0] and "FOR NO KEY UPDATE" in sent[1]
        assert "RETURNING" in sent[1]
    else:
        assert [s.split()[0] for s in sent] == ["SELECT", "UPDATE"], sent
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="one")
    assert Category.objects.get(slug="uno").pk == c.pk


@pytest.mark.parametrize("comment", [False, True], ids=["plain", "commented"])
def test_a_save_leaves_the_other_rows_cached(queries: Any, comment: bool) -> None:
    """The old values came back and were used: only the saved row's entries go (a write whose
    rows did not come back invalidates the whole table), with or without an outer wrapper
    that rewrites the text."""

    def commenter(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        return execute(f"{sql} /* app:test */" if comment else sql, params, many, context)

    a = Category.objects.create(title="a", slug="a")
    b = Category.objects.create(title="b", slug="b")
    assert Category.objects.get(slug="a").pk == a.pk
    assert Category.objects.get(pk=b.pk).slug == "b"
    assert Category.objects.get(slug="b").pk == b.pk
    a.slug = "a2"
    with connection.execute_wrapper(commenter):
        a.save()
    assert statements(queries, lambda: Category.objects.get(pk=b.pk)) == []
    assert statements(queries, lambda: Category.objects.get(slug="b")) == []
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="a")
    assert Category.objects.get(slug="a2").pk == a.pk


def test_delete_returns_the_old_row(queries: Any) -> None:
    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(slug="one").title == "one"
    sent = statements(queries, c.delete)
    deletes = [s for s in sent if s.startswith("DELETE")]
    assert deletes
    if connection.vendor == "postgresql":
        assert "RETURNING" in deletes[-1]
        assert not any("FOR UPDATE" in s for s in sent)
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="one")


def test_expression_updates_invalidate_the_new_values(queries: Any) -> None:
    c = Category.objects.create(title="c", slug="c")
    p = Post.objects.create(title="p", category=c, score=4)
    assert [x.pk for x in Post.objects.filter(score=5)] == []
    assert [x.pk for x in Post.objects.filter(score=4)] == [p.pk]
    Post.objects.filter(pk=p.pk).update(score=F("score") + 1)
    assert [x.pk for x in Post.objects.filter(score=5)] == [p.pk]
    assert [x.pk for x in Post.objects.filter(score=4)] == []


def test_bulk_update_and_in_lists(queries: Any) -> None:
    a = Category.objects.create(title="a", slug="a")
    b = Category.objects.create(title="b", slug="b")
    for slug in ("a", "b", "a2", "b2"):
        Category.objects.filter(slug=slug).count()
    a.slug, b.slug = "a2", "b2"
    Category.objects.bulk_update([a, b], ["slug"])
    assert Category.objects.filter(slug="a").count() == 0
    assert Category.objects.filter(slug="b2").count() == 1
    Category.objects.filter(pk__in=[a.pk, b.pk]).update(title="t")
    assert {x.title for x in Category.objects.filter(slug__in=["a2", "b2"])} == {"t"}
    Category.objects.filter(pk__in=[a.pk, b.pk]).delete()
    assert Category.objects.filter(slug="a2").count() == 0


def test_write_inside_a_transaction_and_rolled_back(queries: Any) -> None:
    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(slug="one").title == "one"
    with transaction.atomic():
        c.slug = "two"
        c.save()
    assert Category.objects.get(slug="two").pk == c.pk
    try:
        with transaction.atomic():
            c.slug = "three"
            c.save()
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert Category.objects.get(slug="two").pk == c.pk
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="three")


def test_save_of_a_row_that_vanished_inserts_it_again(queries: Any) -> None:
    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.filter(title="one").count() == 1
    Category.objects.filter(pk=c.pk).delete()
    assert Category.objects.filter(title="one").count() == 0
    c.save()  # the UPDATE matches nothing, Django inserts
    assert Category.objects.filter(title="one").count() == 1


def test_an_outer_wrapper_that_rewrites_the_statement(queries: Any) -> None:
    """A SQL commenter appends to every statement: the old values still come back."""

    def commenter(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        return execute(f"{sql} /* app:test */", params, many, context)

    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(slug="one").pk == c.pk
    with connection.execute_wrapper(commenter):
        c.slug = "uno"
        c.save()
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="one")
    assert Category.objects.get(slug="uno").pk == c.pk


def test_an_outer_wrapper_that_runs_its_own_statement_first(queries: Any) -> None:
    """Whatever runs before the write on the same cursor: the invalidation is never narrower
    (here, the whole table when the write's rows did not come back first)."""

    def probe_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith(("UPDATE", "DELETE")):
            context["cursor"].execute("SELECT 1")
        return execute(sql, params, many, context)

    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(slug="one").pk == c.pk
    assert Category.objects.filter(title="one").count() == 1
    with connection.execute_wrapper(probe_first):
        c.slug, c.title = "uno", "uno"
        c.save()
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="one")
    assert Category.objects.filter(title="one").count() == 0


def test_repeated_saves_reuse_the_rewrite_with_their_own_values(queries: Any) -> None:
    """Every save() of a model sends the same text, so the rewrite is remembered by text: each
    save must still return and invalidate its own rows' old values, and a scheme registered
    between two saves (more columns to return) must give a rewrite of its own."""
    a = Category.objects.create(title="a", slug="a")
    b = Category.objects.create(title="b", slug="b")
    assert Category.objects.get(pk=a.pk).slug == "a"
    assert Category.objects.get(pk=b.pk).slug == "b"
    for step in range(3):
        for obj in (a, b):
            old, obj.slug = obj.slug, f"{obj.title}{step}"
            assert Category.objects.get(slug=old).pk == obj.pk  # cached under the old slug
            if step:  # the title scheme appears after the first saves
                assert Category.objects.filter(title=obj.title).count() == 1
            sent = statements(queries, obj.save)
            if connection.vendor == "postgresql":  # the guard fails: the slug changes
                assert len(sent) == 2 and "FOR NO KEY UPDATE" in sent[1], sent
            with pytest.raises(Category.DoesNotExist):
                Category.objects.get(slug=old)
            assert Category.objects.get(slug=obj.slug).pk == obj.pk
            assert Category.objects.get(pk=obj.pk).slug == obj.slug
            if step:
                assert [c.slug for c in Category.objects.filter(title=obj.title)] == [obj.slug]
    Category.objects.filter(pk=a.pk).update(title="moved")
    assert Category.objects.filter(title="a").count() == 0
    assert Category.objects.get(title="moved").pk == a.pk


def test_writes_do_not_hold_up_inserts_that_reference_their_rows() -> None:
    """The old values are read under the lock the write itself takes: ``FOR NO KEY UPDATE`` for
    an update that keeps the row's keys, which the foreign-key check of an insert referencing
    the row (``FOR KEY SHARE``) does not wait for, as with Django's own ``UPDATE``."""
    c = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(slug="one").pk == c.pk  # a scheme: writes read old values
    assert Category.objects.filter(title="one").count() == 1
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            if connection.vendor == "postgresql":
                with connections["default"].cursor() as cursor:
                    cursor.execute("SET lock_timeout = '5s'")  # a wait fails instead of hanging
            Post.objects.create(title="p", category_id=c.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    with transaction.atomic():
        c.title = "uno"
        c.save()  # on PostgreSQL: the UPDATE returning its old values
        Category.objects.filter(slug="one").update(title="eins")  # a pre-read in the transaction
        if connection.vendor == "postgresql":
            worker = threading.Thread(target=insert)
            worker.start()
            worker.join()
    if connection.vendor != "postgresql":
        insert()  # SQLite has no row locks: the insert simply follows
    assert errors == []
    assert Post.objects.filter(category_id=c.pk).count() == 1
    assert Category.objects.filter(title="one").count() == 0
    assert Category.objects.get(slug="one").title == "eins"


def test_old_and_new_rows_are_merged_only_when_identical() -> None:
    from decimal import Decimal

    from freshcache.invalidation import _distinct_rows

    # A save that keeps its keys returns the same values twice: one set of stamps.
    assert _distinct_rows([(1, "a", None)], [(1, "a", None)]) == [(1, "a", None)]
    assert _distinct_rows([(1, "a")], [(1, "b")]) == [(1, "a"), (1, "b")]
    # Equal is not enough where the stamps differ: 1 == True, Decimal("1.5") == Decimal("1.50").
    assert _distinct_rows([(1, 1)], [(1, True)]) == [(1, 1), (1, True)]
    assert _distinct_rows([(1, Decimal("1.5"))], [(1, Decimal("1.50"))]) == [
        (1, Decimal("1.5")),
        (1, Decimal("1.50")),
    ]
    rows = [(i, f"s{i}") for i in range(3)]
    assert _distinct_rows(rows, [*rows, (3, "s3")]) == [*rows, (3, "s3")]


def test_the_row_stays_locked_from_its_old_values_to_the_write() -> None:
    """The old values and the write are one statement: while the write itself waits (here on
    the unique index, for another transaction inserting the slug it sets), no other writer can
    move the row, so the values it returns are those of the version it replaces."""
    c = Category.objects.create(title="t", slug="a")
    assert Category.objects.get(slug="a").pk == c.pk  # a scheme: the write reads old values
    if connection.vendor != "postgresql":  # SQLite locks the whole database instead
        c.slug = "c"
        c.save()
        assert Category.objects.filter(slug="a").count() == 0
        return
    import psycopg

    params = raw_params()
    holder = psycopg.connect(**params)  # a transaction that inserts slug "c" and waits
    holder.execute("INSERT INTO testapp_category (title, slug) VALUES ('other', 'c')")
    saver, errors = start_saving(c, slug="c")
    try:
        with psycopg.connect(**params, autocommit=True) as watcher:
            wait_for_a_waiting_update(watcher)
            watcher.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                watcher.execute("UPDATE testapp_category SET slug = 'd' WHERE id = %s", [c.pk])
    finally:
        holder.rollback()
        holder.close()
        saver.join(timeout=30)
    assert errors == []
    assert Category.objects.get(slug="c").pk == c.pk
    assert Category.objects.filter(slug="a").count() == 0
    assert Category.objects.filter(slug="d").count() == 0


def raw_params() -> dict[str, Any]:
    """psycopg connection arguments for a connection freshcache does not see."""
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(django_only, None)
    return params


def start_saving(obj: Any, **values: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Set ``values`` on ``obj`` and ``save()`` it on a thread of its own (which may wait for a
    lock); the thread, and the list its error lands in."""

    def save() -> None:
        for name, value in values.items():
            setattr(obj, name, value)
        obj.save()

    saver, _, errors = start_elsewhere(save)
    return saver, errors


def wait_for_a_waiting_update(watcher: Any) -> None:
    """Return once an ``UPDATE`` of testapp_category waits for a lock (within 10 s)."""
    for _ in range(500):
        waiting = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
            " AND query LIKE '%UPDATE \"testapp_category\"%'"
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the UPDATE never waited for the lock")


# -- the guarded update of one row (freshcache.returning._guarded) ------------------------------


def test_a_save_from_an_instance_loaded_before_the_row_moved(queries: Any) -> None:
    """The instance still says slug "a", the row says "b": the guarded statement matches
    nothing, and the locking one returns "b" as the old value, whose entry goes."""
    c = Category.objects.create(title="t", slug="a")
    loaded = Category.objects.get(pk=c.pk)
    Category.objects.filter(pk=c.pk).update(slug="b")
    assert Category.objects.get(slug="b").title == "t"  # cached under the row's real slug
    loaded.title = "new"
    loaded.save()  # writes slug "a" back
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="b")
    assert Category.objects.get(slug="a").title == "new"


def test_a_guarded_save_that_waited_for_a_writer_that_moved_the_row() -> None:
    """The guard is tested on the version the statement replaces: a save waiting for a
    transaction that moves the row from "a" to "b" finds "b" once that commits, falls back to
    the locking statement, and invalidates "b" as the old value."""
    c = Category.objects.create(title="t", slug="a")
    assert Category.objects.get(slug="a").pk == c.pk  # the slug scheme
    loaded = Category.objects.get(pk=c.pk)
    if connection.vendor != "postgresql":
        return
    import psycopg

    from freshcache.signals import cache_invalidated

    rows: list[dict[str, Any]] = []

    def receiver(sender: Any, table: str, whole_table: bool, **kwargs: Any) -> None:
        if table == "testapp_category":
            rows.extend([{"*": True}] if whole_table else kwargs["rows"])

    holder = psycopg.connect(**raw_params())  # moves the row to "b", unseen by freshcache
    holder.execute("UPDATE testapp_category SET slug = 'b' WHERE id = %s", [c.pk])
    cache_invalidated.connect(receiver)
    saver, errors = start_saving(loaded, title="new")
    try:
        with psycopg.connect(**raw_params(), autocommit=True) as watcher:
            wait_for_a_waiting_update(watcher)
        holder.commit()
    finally:
        holder.close()
        saver.join(timeout=30)
        cache_invalidated.disconnect(receiver)
    assert errors == []
    assert {"*": True} in rows or any(r.get("slug") == "b" for r in rows), rows
    assert Category.objects.get(slug="a").title == "new"


def test_a_trigger_that_changes_a_needed_column(queries: Any) -> None:
    """The guard held (the slug was "a"), but a trigger wrote another slug: old and new are
    not one row, and the whole table is invalidated."""
    c = Category.objects.create(title="t", slug="a")
    other = Category.objects.create(title="o", slug="o")
    assert Category.objects.get(slug="a").title == "t"
    assert Category.objects.get(slug="o").title == "o"
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION freshcache_suffix() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN NEW.slug := NEW.slug || '-x'; RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER freshcache_suffix BEFORE UPDATE ON testapp_category"
            " FOR EACH ROW WHEN (NEW.title = 'trigger') EXECUTE FUNCTION freshcache_suffix()"
        )
    try:
        c.title = "trigger"
        sent = statements(queries, c.save)
        assert len(sent) == 1 and "IS NOT DISTINCT FROM" in sent[0], sent
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER freshcache_suffix ON testapp_category")
            cursor.execute("DROP FUNCTION freshcache_suffix()")
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="a")
    assert Category.objects.get(slug="a-x").title == "trigger"
    with queries() as q:  # the whole table went
        assert Category.objects.get(slug="o").pk == other.pk
    assert q.count == 1


def test_guards_compare_text_byte_for_byte(queries: Any) -> None:
    """Under a case-insensitive collation "abc" equals "ABC"; a save that changes only the
    case must still invalidate the old spelling's entry."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE COLLATION IF NOT EXISTS freshcache_ci"
            " (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
        )
        cursor.execute(
            "ALTER TABLE testapp_category ALTER COLUMN title TYPE varchar(100)"
            " COLLATE freshcache_ci"
        )
    try:
        c = Category.objects.create(title="abc", slug="s")
        assert [x.pk for x in Category.objects.filter(title="abc")] == [c.pk]
        c.title = "ABC"
        sent = statements(queries, c.save)
        assert len(sent) == 2 and "FOR NO KEY UPDATE" in sent[1], sent
        # Not freshcache's business which rows "abc" matches here (limits.md); only that the
        # entry made while the row said "abc" is gone.
        assert [x.title for x in Category.objects.filter(title="abc")] == ["ABC"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE testapp_category ALTER COLUMN title TYPE varchar(100)"
                ' COLLATE "default"'
            )


def test_guards_on_null(queries: Any) -> None:
    """A needed column set to NULL is guarded too (``IS NULL``, or ``IS NOT DISTINCT FROM``
    a NULL parameter where Django sends None as one); moves to and from NULL fall back."""
    c = Category.objects.create(title="t", slug=None)
    assert [x.title for x in Category.objects.filter(slug=None)] == ["t"]
    c.title = "u"
    sent = statements(queries, c.save)
    if connection.vendor == "postgresql":
        assert len(sent) == 1 and "FOR NO KEY UPDATE" not in sent[0], sent
    assert [x.title for x in Category.objects.filter(slug=None)] == ["u"]
    c.slug = "s"
    c.save()
    assert [x.title for x in Category.objects.filter(slug=None)] == []
    assert Category.objects.get(slug="s").title == "u"
    c.slug = None
    sent = statements(queries, c.save)
    if connection.vendor == "postgresql":
        assert len(sent) == 2 and "FOR NO KEY UPDATE" in sent[1], sent
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="s")
    assert [x.title for x in Category.objects.filter(slug=None)] == ["u"]


def test_which_saves_are_guarded(queries: Any) -> None:
    """Foreign keys, booleans and integers are compared exactly; a needed column of another
    type (a date), or one the save does not set (``update_fields``), takes the locking
    statement at once."""
    c = Category.objects.create(title="c", slug="c")
    p = Post.objects.create(title="p", category=c, score=4)
    assert [x.title for x in Post.objects.filter(category=c, visible=True, score=4)] == ["p"]
    p.title = "q"
    sent = statements(queries, p.save)
    if connection.vendor == "postgresql":
        assert len(sent) == 1 and sent[0].count("IS NOT DISTINCT FROM") == 6, sent
    assert [x.title for x in Post.objects.filter(category=c, visible=True, score=4)] == ["q"]
    p.title = "r"
    sent = statements(queries, lambda: p.save(update_fields=["title"]))
    if connection.vendor == "postgresql":
        assert len(sent) == 1 and "FOR NO KEY UPDATE" in sent[0], sent
    assert [x.title for x in Post.objects.filter(category=c, visible=True, score=4)] == ["r"]
    assert Post.objects.filter(created=None).count() == 1  # a scheme on a datetime column
    p.title = "s"
    sent = statements(queries, p.save)
    if connection.vendor == "postgresql":
        assert len(sent) == 1 and "FOR NO KEY UPDATE" in sent[0], sent
    assert [x.title for x in Post.objects.filter(category=c, visible=True, score=4)] == ["s"]


def test_writes_to_no_rows_by_an_empty_key_list(queries: Any) -> None:
    """``pk__in=[]``: Django sends nothing and reports 0 rows; so must a pinned write, and a
    multi-table child's update, which Django narrows to ``pk IN ()`` when nothing matches."""
    from tests.testapp.models import Restaurant

    c = Category.objects.create(title="c", slug="c")
    r = Restaurant.objects.create(name="r", serves_pizza=True)
    assert Category.objects.get(slug="c").pk == c.pk  # schemes: the writes read old values
    assert [x.pk for x in Restaurant.objects.filter(name="r", serves_pizza=True)] == [r.pk]
    assert Category.objects.filter(pk__in=[]).update(title="t") == 0
    assert Category.objects.filter(pk__in=[]).delete() == (0, {})
    assert Restaurant.objects.filter(name="none").update(name="x", serves_pizza=False) == 0
    assert Category.objects.get(slug="c").title == "c"
    assert Restaurant.objects.filter(name="r").update(name="s", serves_pizza=False) == 1
    assert list(Restaurant.objects.filter(name="r", serves_pizza=True)) == []
