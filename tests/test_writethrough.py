"""A save writes its row through to the ``get(pk=)`` entry its instance was loaded from
(freshcache.writethrough), and never leaves a value a later write has overtaken.

Where the save cannot write through (SQLite, Redis Cluster, a transaction) the same reads must
give the same answers, from the database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from freshcache.store import store
from tests.conftest import on_another_connection, start_elsewhere
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


def writes_through() -> bool:
    return connection.vendor == "postgresql" and store.backend.fills


def in_db(pk: int) -> tuple[Any, ...]:
    """The row as the database has it, read on a connection the cache never sees."""
    return on_another_connection(lambda: _uncached_row(pk))


def _uncached_row(pk: int) -> tuple[Any, ...]:
    return row_of(Post.objects.nocache().get(pk=pk))


def row_of(post: Post) -> tuple[Any, ...]:
    return post.title, post.score, post.price, post.created


@pytest.fixture
def post() -> Post:
    category = Category.objects.create(title="c", slug="c")
    return Post.objects.create(title="first", category=category, score=1, price=Decimal("1.50"))


def test_the_next_get_reads_the_saved_row_without_a_query(queries: Any, post: Post) -> None:
    loaded = Post.objects.get(pk=post.pk)
    loaded.title, loaded.score = "second", 2
    loaded.save()
    with queries() as q:
        again = Post.objects.get(pk=post.pk)
    assert q.count == (0 if writes_through() else 1)
    assert row_of(again) == in_db(post.pk) == ("second", 2, Decimal("1.50"), None)
    # And the next save of that instance writes through again.
    again.score = 3
    again.save()
    with queries() as q:
        assert row_of(Post.objects.get(pk=post.pk)) == in_db(post.pk)
    assert q.count == (0 if writes_through() else 1)


def test_the_row_is_the_databases_not_the_instances(queries: Any, post: Post) -> None:
    """The entry holds what the database stored (a price rounded to its scale), never the
    instance's attributes."""
    loaded = Post.objects.get(pk=post.pk)
    loaded.price = "2.345"
    loaded.save()
    with queries() as q:
        again = Post.objects.get(pk=post.pk)
    assert q.count == (0 if writes_through() else 1)
    assert row_of(again) == in_db(post.pk)
    if connection.vendor == "postgresql":
        assert again.price == Decimal("2.35")


def test_a_before_trigger_that_rewrites_a_column(post: Post) -> None:
    """A table with a trigger of its own is not written through (one that runs after the
    UPDATE could change the row again); the read is the database's."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION freshcache_shout() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN NEW.title := upper(NEW.title); RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER freshcache_shout BEFORE UPDATE ON testapp_post"
                " FOR EACH ROW EXECUTE FUNCTION freshcache_shout()"
            )
    try:
        loaded = Post.objects.get(pk=post.pk)
        loaded.title = "quiet"
        loaded.save()
        again = Post.objects.get(pk=post.pk)
        assert row_of(again) == in_db(post.pk)
        if connection.vendor == "postgresql":
            assert again.title == "QUIET"
    finally:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("DROP TRIGGER freshcache_shout ON testapp_post")
                cursor.execute("DROP FUNCTION freshcache_shout()")


def test_a_write_committed_after_ours_is_never_hidden_by_ours(post: Post) -> None:
    """Another process updates the row after our UPDATE committed, and invalidates before our
    invalidation runs: ours must not store its (older) row over that."""
    loaded = Post.objects.get(pk=post.pk)

    def theirs() -> None:
        Post.objects.filter(pk=post.pk).update(title="theirs")
        assert Post.objects.get(pk=post.pk).title == "theirs"  # fills their entry, too

    def then_theirs(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE"):
            on_another_connection(theirs)
        return result

    loaded.title = "ours"
    with connection.execute_wrapper(then_theirs):
        loaded.save()
    assert Post.objects.get(pk=post.pk).title == in_db(post.pk)[0] == "theirs"


def test_an_instance_whose_key_was_changed_fills_nothing_under_its_old_key(post: Post) -> None:
    other = Post.objects.create(title="other", category=post.category, score=5)
    loaded = Post.objects.get(pk=post.pk)
    assert Post.objects.get(pk=other.pk).title == "other"
    loaded.pk = loaded.id = other.pk  # saved over the other row
    loaded.title = "moved"
    loaded.save()
    assert Post.objects.get(pk=post.pk).title == in_db(post.pk)[0] == "first"
    assert Post.objects.get(pk=other.pk).title == in_db(other.pk)[0] == "moved"


def test_a_save_inside_a_transaction_is_not_written_through(queries: Any, post: Post) -> None:
    """The row a save returns inside a transaction is not final: a later statement of the
    same transaction may change it again."""
    loaded = Post.objects.get(pk=post.pk)
    with transaction.atomic():
        loaded.title = "in the transaction"
        loaded.save()
        Post.objects.filter(pk=post.pk).update(score=F("score") + 10)
    assert row_of(Post.objects.get(pk=post.pk)) == in_db(post.pk)
    assert Post.objects.get(pk=post.pk).score == 11


def test_a_stale_instance_saves_its_own_values(post: Post) -> None:
    """An instance loaded before another write: that write's invalidation changed the token
    the load noted, so the save is not written through, and the next read is right."""
    loaded = Post.objects.get(pk=post.pk)
    on_another_connection(lambda: Post.objects.filter(pk=post.pk).update(score=9))
    assert Post.objects.get(pk=post.pk).score == 9
    loaded.title = "stale"
    loaded.save()
    assert (
        row_of(Post.objects.get(pk=post.pk))
        == in_db(post.pk)
        == ("stale", 1, Decimal("1.50"), None)
    )


def test_update_fields_and_deferred_loads_read_the_database(queries: Any, post: Post) -> None:
    loaded = Post.objects.get(pk=post.pk)
    loaded.title = "partial"
    loaded.save(update_fields=["title"])
    assert Post.objects.get(pk=post.pk).title == "partial"
    deferred = Post.objects.only("title").get(pk=post.pk)
    deferred.title = "deferred"
    deferred.save()
    assert row_of(Post.objects.get(pk=post.pk)) == in_db(post.pk)


def test_a_pickled_instance_leaves_its_load_behind(queries: Any, post: Post) -> None:
    """What a load noted stays in this process: a copy from a pickle (a cached value that
    holds the instance) saves like any instance, and is read back from the database."""
    import pickle

    loaded = pickle.loads(pickle.dumps(Post.objects.get(pk=post.pk)))
    loaded.title = "unpickled"
    loaded.save()
    with queries() as q:
        assert Post.objects.get(pk=post.pk).title == in_db(post.pk)[0] == "unpickled"
    assert q.count == 1


@pytest.fixture
def after_update_trigger() -> Iterator[None]:
    """An AFTER UPDATE trigger that updates the row again: what RETURNING gave is not what
    commits."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION freshcache_bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.score < 100 THEN"
            " UPDATE testapp_post SET score = NEW.score + 100 WHERE id = NEW.id; END IF;"
            " RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER freshcache_bump AFTER UPDATE ON testapp_post"
            " FOR EACH ROW EXECUTE FUNCTION freshcache_bump()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER freshcache_bump ON testapp_post")
            cursor.execute("DROP FUNCTION freshcache_bump()")


def test_an_after_trigger_that_changes_the_row_again(
    post: Post, after_update_trigger: None
) -> None:
    loaded = Post.objects.get(pk=post.pk)
    loaded.score = 2
    loaded.save()
    assert row_of(Post.objects.get(pk=post.pk)) == in_db(post.pk)
    if connection.vendor == "postgresql":
        assert Post.objects.get(pk=post.pk).score == 102


def test_a_transaction_begun_on_the_drivers_own_connection(post: Post) -> None:
    """Django believes it is in autocommit mode; the driver knows better, and the save that
    is rolled back afterwards leaves no entry behind."""
    loaded = Post.objects.get(pk=post.pk)
    connection.ensure_connection()
    cursor = connection.connection.cursor()  # the driver's, which Django does not see
    cursor.execute("BEGIN")
    try:
        loaded.title = "rolled back"
        loaded.save()
    finally:
        cursor.execute("ROLLBACK")
        cursor.close()
    assert Post.objects.get(pk=post.pk).title == in_db(post.pk)[0] == "first"


def test_tables_with_foreign_keys_either_way_are_written_through(queries: Any, post: Post) -> None:
    """Their only AFTER triggers are PostgreSQL's own foreign-key checks, which change no row:
    a post references its category, and posts reference a category."""
    for model, pk in ((Post, post.pk), (Category, post.category_id)):
        loaded = model.objects.get(pk=pk)
        loaded.title = f"{model.__name__} again"
        loaded.save()
        with queries() as q:
            assert model.objects.get(pk=pk).title == f"{model.__name__} again"
        assert q.count == (0 if writes_through() else 1)


def test_a_value_another_row_takes_meanwhile_is_never_hidden() -> None:
    """Only the ``get(pk=)`` entry is written through, never the row's entries under other
    values: the row stamp vouches for what this row holds, not for which row holds a value.
    Ours commits; a second write moves the row off its slug and is held before its
    invalidation; a third gives that slug to another row and returns; then ours finishes.
    A read by that slug must find the other row."""
    news = Category.objects.create(title="News", slug="news")
    assert Category.objects.get(slug="news").pk == news.pk  # cached, under the slug's stamp
    loaded = Category.objects.get(pk=news.pk)
    moved, release = threading.Event(), threading.Event()

    def held_after_update(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        committed = connection.get_autocommit() and not connection.in_atomic_block
        if sql.startswith("UPDATE") and context["cursor"].rowcount > 0 and committed:
            moved.set()
            release.wait(10)
        return result

    def move() -> None:
        with connection.execute_wrapper(held_after_update):
            Category.objects.filter(pk=news.pk).update(slug="old-news")

    def then_the_others(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE") and not started:
            started.append(start_elsewhere(move))
            assert moved.wait(10)
            on_another_connection(lambda: Category.objects.create(title="Other", slug="news"))
        return result

    started: list[Any] = []
    loaded.title = "Ours"
    try:
        with connection.execute_wrapper(then_the_others):
            loaded.save()
        assert Category.objects.get(slug="news").title == "Other"
    finally:
        release.set()
        started[0][0].join(10)
    assert Category.objects.get(slug="news").title == "Other"
    assert Category.objects.get(slug="old-news").title == "Ours"
