"""A miss of a known chain sends the statement its first read compiled, without Django's query
building or compiler (freshcache.directmiss): one query, the database's answer value for value
and type for type, stored against the stamps read before it, so that the next read is a hit and
a write committed meanwhile is never hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, Max, Sum
from django.db.models.sql.compiler import SQLCompiler

from freshcache.store import store
from tests.conftest import on_another_connection
from tests.test_chains import _plain, uncached
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)

READS: dict[str, Callable[[], Any]] = {
    "aggregate": lambda: Post.objects.filter(category__slug="news").aggregate(
        total=Sum("price"), n=Count("id"), top=Max("score")
    ),
    "count": lambda: Post.objects.filter(score__gte=2).count(),
    "exists": lambda: Post.objects.filter(score__gte=6, visible=True).exists(),
    "fetch": lambda: list(Post.objects.filter(score__lt=5).order_by("-score")[:3]),
    "select_related": lambda: list(
        Post.objects.select_related("category", "author").filter(score__lt=6).order_by("id")
    ),
    "empty": lambda: list(Post.objects.filter(score__gt=100).order_by("id")),
}


def touch_every_post() -> None:
    """A write that invalidates every read above, on a connection of its own."""
    on_another_connection(lambda: [p.save() for p in Post.objects.nocache().all()])


def typed(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, dict):
        return {k: (type(v), v) for k, v in value.items()}
    return type(value), value


@pytest.mark.parametrize("name", sorted(READS))
def test_a_known_chains_miss_sends_one_query_and_compiles_nothing(
    name: str, blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    read = READS[name]
    read()  # learned from the general path
    read()  # a hit
    for round_ in range(3):
        on_another_connection(
            lambda r=round_: Post.objects.filter(pk=blog["posts"][r].pk).update(score=r + 1)
        )
        compiles.clear()
        with queries() as q:
            missed = read()
        assert q.count == 1
        assert compiles == []
        assert typed(missed) == typed(uncached(read))
        with queries() as q:
            hit = read()
        assert q.count == 0  # the miss stored what it read
        assert typed(hit) == typed(missed)


def test_what_a_miss_stored_follows_every_later_write(blog: dict[str, Any], queries: Any) -> None:
    read = READS["aggregate"]
    read()
    for price in ("3.50", "4.75", "1.00"):
        touch_every_post()
        read()  # a direct miss, stored
        Post.objects.filter(category__slug="news").update(price=price)
        assert typed(read()) == typed(uncached(read))
        news = blog["news"]
        Post.objects.create(title="new", category=news, score=9, price=price)
        assert typed(read()) == typed(uncached(read))


def test_a_write_committed_while_the_miss_reads_is_never_hidden(
    blog: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement has read the old rows; before the miss stores them, another connection
    writes and invalidates. The store must be refused: the next read sees the write.

    On PostgreSQL the write lands right after the SELECT ran, before anything else the miss
    does; SQLite locks the table while the SELECT's cursor is open, so there it lands just
    before the store."""
    read = READS["count"]
    read()
    touch_every_post()
    before = uncached(read)
    fired: list[bool] = []

    def write() -> None:
        if not fired:
            fired.append(True)
            on_another_connection(lambda: Post.objects.filter(score__lt=2).update(score=50))

    if connection.vendor == "postgresql":

        def after_select(execute: Any, sql: str, params: Any, many: bool, ctx: Any) -> Any:
            result = execute(sql, params, many, ctx)
            if sql.lstrip().upper().startswith("SELECT"):
                write()
            return result

        with connection.execute_wrapper(after_select):
            stale = read()
    else:
        save = store.save

        def write_first(*args: Any, **kwargs: Any) -> Any:
            write()
            return save(*args, **kwargs)

        monkeypatch.setattr(store, "save", write_first)
        stale = read()
        monkeypatch.undo()
    assert fired
    assert stale == before  # read before the write: what it stored must not outlive it
    after = uncached(read)
    assert after > before
    assert read() == after


def test_a_compiler_wrapped_after_freshcache_sees_every_miss(
    blog: dict[str, Any], queries: Any
) -> None:
    read = READS["count"]
    read()
    seen: list[Any] = []
    original = SQLCompiler.execute_sql

    def profiler(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.query.model)
        return original(self, *args, **kwargs)

    SQLCompiler.execute_sql = profiler  # type: ignore[method-assign]
    try:
        for _ in range(2):
            touch_every_post()
            seen.clear()
            value = read()
            assert seen == [Post]
            assert value == uncached(read)
    finally:
        SQLCompiler.execute_sql = original  # type: ignore[method-assign]


def test_a_category_without_posts_reads_none_and_zero(blog: dict[str, Any]) -> None:
    empty = Category.objects.create(title="Empty", slug="empty")

    def read() -> Any:
        return Post.objects.filter(category=empty).aggregate(s=Sum("score"), n=Count("id"))

    read()
    for score in (3, 4):
        Post.objects.create(title="x", category=blog["news"], score=score)
        assert typed(read()) == typed(uncached(read)) == typed({"s": None, "n": 0})
