"""``save()`` of an existing row sends the guarded statement learned once per shape, without
building a queryset or compiling (freshcache.fastsave), and invalidates what it changed exactly
as the general path does.

Every read below is checked against the database read on a connection the cache never sees.
On SQLite the fast path is not taken (no ``RETURNING`` guard): the same reads must give the same
answers the general way.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Sum
from django.db.models.signals import post_save, pre_save
from django.db.models.sql.compiler import SQLUpdateCompiler

from freshcache import fastsave
from tests.conftest import on_another_connection
from tests.testapp.models import Author, Badge, Category, Post, Restaurant, Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def fast() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def news() -> Category:
    return Category.objects.create(title="News", slug="news")


@pytest.fixture
def misc() -> Category:
    return Category.objects.create(title="Misc", slug="misc")


@pytest.fixture
def post(news: Category) -> Post:
    author = Author.objects.create(name="Ann")
    return Post.objects.create(title="first", category=news, author=author, score=1,
                               price=Decimal("1.50"))  # fmt: skip


def db_post(pk: int) -> tuple[Any, ...] | None:
    """The row as the database has it (None when gone), read where the cache never looks."""

    def read() -> tuple[Any, ...] | None:
        row = (
            Post.objects.nocache()
            .filter(pk=pk)
            .values_list("title", "category_id", "score", "price", "author_id")
        )
        return next(iter(row), None)

    return on_another_connection(read)


def cached_post(pk: int) -> tuple[Any, ...]:
    p = Post.objects.get(pk=pk)
    return p.title, p.category_id, p.score, p.price, p.author_id


def warm(post: Post, news: Category) -> dict[str, Any]:
    """Cache the reads a save of ``post`` must invalidate, and return them."""
    return {
        "get": cached_post(post.pk),
        "sum": Post.objects.filter(category=news).aggregate(s=Sum("score"))["s"],
        "titles": list(Post.objects.filter(author=post.author_id).values_list("title", flat=True)),
        "joined": list(Post.objects.filter(category__slug="news").values_list("score", flat=True)),
    }


#: Reading them again is caching them again.
reads = warm


def in_db(post: Post, news: Category) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with_nocache = Post.objects.nocache()
        row = with_nocache.filter(pk=post.pk).values_list(
            "title", "category_id", "score", "price", "author_id"
        )
        return {
            "get": row[0],
            "sum": with_nocache.filter(category=news).aggregate(s=Sum("score"))["s"],
            "titles": list(
                with_nocache.filter(author=post.author_id).values_list("title", flat=True)
            ),
            "joined": list(
                with_nocache.filter(category__slug="news").values_list("score", flat=True)
            ),
        }

    return on_another_connection(read)


def test_a_save_sends_one_statement_and_compiles_nothing_once_learned(
    queries: Any, updates_compiled: list[str], post: Post, news: Category
) -> None:
    warm(post, news)  # the columns the schemes need are part of the shape: settle them first
    loaded = Post.objects.get(pk=post.pk)
    loaded.score = 2
    loaded.save()  # the first save of the shape learns it from the compiler
    del updates_compiled[:]
    for score in (3, 4, 5):
        loaded = Post.objects.get(pk=post.pk)
        loaded.score, loaded.title = score, f"title {score}"
        with queries() as q:
            loaded.save()
        assert reads(post, news) == in_db(post, news)
    if fast():
        assert updates_compiled == []
        assert q.count == 1
        assert q.context.captured_queries[0]["sql"].startswith('UPDATE "testapp_post" SET')
        assert "IS NOT DISTINCT FROM" in q.context.captured_queries[0]["sql"]
    else:
        assert len(updates_compiled) == 3
    assert db_post(post.pk) == ("title 5", post.category_id, 5, Decimal("1.50"), post.author_id)


def test_every_cached_read_of_the_row_is_invalidated(post: Post, news: Category) -> None:
    before = warm(post, news)
    for round_ in range(3):  # learned on the first save, fast on the next ones
        p = Post.objects.get(pk=post.pk)
        p.title, p.score = f"t{round_}", 10 + round_
        p.save()
        now = reads(post, news)
        assert now == in_db(post, news)
        assert now["sum"] == 10 + round_ and now != before


def test_an_instance_not_loaded_through_the_cache_invalidates_too(
    post: Post, news: Category
) -> None:
    """Learned first while the table's schemes need the key alone; the reads cached next add
    schemes, and the saves after them must guard and invalidate those columns too."""
    assert cached_post(post.pk) == db_post(post.pk)
    p = Post.objects.nocache().get(pk=post.pk)
    p.save()
    warm(post, news)
    for score in (7, 8):
        p = Post.objects.nocache().get(pk=post.pk)
        p.score = score
        p.save()
        assert reads(post, news) == in_db(post, news)
        assert reads(post, news)["sum"] == score


def test_a_save_that_moves_the_row_invalidates_both_sides_in_two_statements(
    queries: Any, post: Post, news: Category, misc: Category
) -> None:
    p = Post.objects.get(pk=post.pk)
    p.score = 2
    p.save()  # learn the shape
    warm(post, news)
    in_misc = list(Post.objects.filter(category=misc))
    assert in_misc == []
    p = Post.objects.get(pk=post.pk)
    p.category = misc
    with queries() as q:
        p.save()
    # The guarded form updates nothing (the category changes), the locking form follows; the
    # guarded form is not sent twice.
    assert q.count == (2 if fast() else q.count)
    assert reads(post, news) == in_db(post, news)
    assert reads(post, news)["sum"] is None
    assert list(Post.objects.filter(category=misc)) == [p]
    assert cached_post(post.pk)[1] == misc.pk


def test_a_row_deleted_meanwhile_is_inserted_again_as_django_does(
    post: Post, news: Category
) -> None:
    warm(post, news)
    p = Post.objects.get(pk=post.pk)
    p.save()  # learn the shape
    p = Post.objects.get(pk=post.pk)
    warm(post, news)
    on_another_connection(lambda: Post.objects.filter(pk=post.pk).delete())
    with pytest.raises(Post.DoesNotExist):
        Post.objects.get(pk=post.pk)  # the delete invalidated
    p.score = 9
    p.save()
    assert db_post(post.pk) == ("first", news.pk, 9, Decimal("1.50"), post.author_id)
    assert reads(post, news) == in_db(post, news)


def test_a_forced_update_of_a_missing_row_fails_as_in_django(post: Post) -> None:
    p = Post.objects.get(pk=post.pk)
    p.save(force_update=True)  # the row exists: an update happened, Django is satisfied
    p.save(force_update=True)
    on_another_connection(lambda: Post.objects.filter(pk=post.pk).delete())
    with pytest.raises(DatabaseError):
        p.save(force_update=True)
    with pytest.raises(DatabaseError):
        p.save(update_fields=["title"])
    assert db_post(post.pk) is None


def test_update_fields_write_only_those_columns(post: Post, news: Category) -> None:
    warm(post, news)
    for score in (20, 21):
        p = Post.objects.get(pk=post.pk)
        on_another_connection(lambda: Post.objects.filter(pk=post.pk).update(title="elsewhere"))
        p.score = score
        p.save(update_fields=["score"])
        assert db_post(post.pk) == ("elsewhere", news.pk, score, Decimal("1.50"), post.author_id)
        assert reads(post, news) == in_db(post, news)


def test_each_pattern_of_null_values_is_its_own_statement(post: Post, news: Category) -> None:
    warm(post, news)
    for price, author in [(None, None), (Decimal("2.25"), post.author_id), (None, None),
                          (Decimal("3.75"), None), (Decimal("4.00"), post.author_id)]:  # fmt: skip
        p = Post.objects.get(pk=post.pk)
        p.price, p.author_id = price, author
        p.save()
        assert db_post(post.pk) == ("first", news.pk, 1, price, author)
        assert reads(post, news) == in_db(post, news)


def test_an_expression_goes_through_django(post: Post, news: Category) -> None:
    warm(post, news)
    for _ in range(2):
        p = Post.objects.get(pk=post.pk)
        p.score = F("score") + 1
        p.save()
    assert db_post(post.pk)[2] == 3  # type: ignore[index]
    assert reads(post, news) == in_db(post, news)


def test_a_save_in_a_transaction_invalidates_at_commit_and_not_on_rollback(
    post: Post, news: Category
) -> None:
    p = Post.objects.get(pk=post.pk)
    p.save()  # learn the shape
    warm(post, news)
    with transaction.atomic():
        p = Post.objects.get(pk=post.pk)
        p.score = 30
        p.save()
    assert reads(post, news) == in_db(post, news)
    assert reads(post, news)["sum"] == 30

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        p.score = 31
        p.save()
        raise Undo
    assert reads(post, news) == in_db(post, news)
    assert reads(post, news)["sum"] == 30


def test_signals_are_sent_once_around_each_save(post: Post) -> None:
    seen: list[str] = []

    def before(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(f"pre {instance.score}")

    def after(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        seen.append(f"post {instance.score} {created}")

    pre_save.connect(before, sender=Post)
    post_save.connect(after, sender=Post)
    try:
        for score in (2, 3):
            p = Post.objects.get(pk=post.pk)
            p.score = score
            p.save()
    finally:
        pre_save.disconnect(before, sender=Post)
        post_save.disconnect(after, sender=Post)
    assert seen == ["pre 2", "post 2 False", "pre 3", "post 3 False"]


def test_select_on_save_goes_through_django(queries: Any) -> None:
    t = Ticket.objects.create(title="a")
    assert Ticket.objects.get(pk=t.pk).title == "a"
    for title in ("b", "c"):
        t = Ticket.objects.get(pk=t.pk)
        t.title = title
        with queries() as q:
            t.save()
        assert q.selects >= 1  # Django's existence check, then its update
        assert Ticket.objects.get(pk=t.pk).title == title
        assert (
            on_another_connection(lambda pk=t.pk: Ticket.objects.nocache().get(pk=pk).title)
            == title
        )


def test_a_model_with_parents_saves_its_own_table_through_django(
    updates_compiled: list[str],
) -> None:
    """The parent's table is a model without parents of its own: its update may be fast."""
    r = Restaurant.objects.create(name="Roma", serves_pizza=True)
    assert Restaurant.objects.get(pk=r.pk).name == "Roma"
    for name in ("Milano", "Napoli"):
        r = Restaurant.objects.get(pk=r.pk)
        r.name, r.serves_pizza = name, name == "Napoli"
        r.save()
        got = Restaurant.objects.get(pk=r.pk)
        assert (got.name, got.serves_pizza) == (name, name == "Napoli")
    assert len([sql for sql in updates_compiled if "testapp_restaurant" in sql]) == 2


def test_a_shape_whose_parameters_differ_from_the_compilers_is_never_fast(
    updates_compiled: list[str],
) -> None:
    b = Badge.objects.create(label="gold", level=1)
    assert Badge.objects.get(pk=b.pk).level == 1
    for level in (2, 3, 4):
        b = Badge.objects.get(pk=b.pk)
        b.level = level
        b.save()
        assert Badge.objects.get(pk=b.pk).level == level
        assert (
            on_another_connection(lambda pk=b.pk: Badge.objects.nocache().get(pk=pk).level) == level
        )
    # The first save compiled to learn the shape, and was refused; every save went Django's way.
    assert len(updates_compiled) == (4 if fast() else 3)
    if fast():
        assert None in fastsave._texts.values()


def test_a_compiler_wrapped_after_freshcache_sees_every_save(
    updates_compiled: list[str], post: Post
) -> None:
    """A profiler (or another library) that wraps the update compiler after freshcache must
    see every save: the fast path stands aside while it is there."""
    seen: list[Any] = []
    original = SQLUpdateCompiler.execute_sql

    def profiler(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.query.model)
        return original(self, *args, **kwargs)

    for score in (2, 3):  # learned, then fast
        p = Post.objects.get(pk=post.pk)
        p.score = score
        p.save()
    SQLUpdateCompiler.execute_sql = profiler  # type: ignore[method-assign]
    try:
        for score in (4, 5, 6):
            p = Post.objects.get(pk=post.pk)
            p.score = score
            p.save()
            assert cached_post(post.pk) == db_post(post.pk)
    finally:
        SQLUpdateCompiler.execute_sql = original  # type: ignore[method-assign]
    assert seen == [Post] * 3
    del updates_compiled[:]
    p = Post.objects.get(pk=post.pk)
    p.score = 7
    p.save()
    assert updates_compiled == ([] if fast() else updates_compiled)
    assert cached_post(post.pk) == db_post(post.pk)


def test_a_statement_a_wrapper_sends_in_front_is_not_taken_for_ours(
    post: Post, news: Category
) -> None:
    """An execute wrapper that puts a statement of its own in front of each UPDATE (a context
    ``set_config``, as audit libraries do) leaves the cursor on that statement's result: the
    save must not read it as its row, and must still invalidate what it wrote."""
    raw = connection.connection if connection.vendor == "postgresql" else None
    threshold = getattr(raw, "prepare_threshold", None)

    def context(execute: Any, sql: str, params: Any, many: bool, ctx: Any) -> Any:
        if connection.vendor == "postgresql" and sql.startswith("UPDATE"):
            sql = "SELECT set_config('app.who', 'tests', false); " + sql
        return execute(sql, params, many, ctx)

    warm(post, news)
    p = Post.objects.get(pk=post.pk)
    p.save()  # learned
    if raw is not None:
        raw.prepare_threshold = None  # a prepared statement holds one command only
    try:
        with connection.execute_wrapper(context):
            for score in (41, 42):
                warm(post, news)
                p = Post.objects.get(pk=post.pk)
                p.score = score
                p.save()
                assert reads(post, news) == in_db(post, news)
                assert reads(post, news)["sum"] == score
    finally:
        if raw is not None:
            raw.prepare_threshold = threshold


def test_errors_come_in_djangos_order(post: Post) -> None:
    """Django names the row before it prepares the values: a bad key is reported first."""
    p = Post.objects.get(pk=post.pk)
    p.save()  # learned
    p.pk, p.score = "abc", "xyz"
    with pytest.raises(ValueError, match="'id'"):
        p.save()
    p = Post.objects.get(pk=post.pk)
    p.score = "xyz"
    with pytest.raises(ValueError, match="'score'"):
        p.save()
    assert db_post(post.pk) == ("first", post.category_id, 1, Decimal("1.50"), post.author_id)
