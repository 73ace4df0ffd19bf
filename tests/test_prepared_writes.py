"""With psycopg's prepared statements allowed (``OPTIONS["prepare_threshold"]``), the guarded
``save()``, the returning ``delete()`` and the fast ``get()``'s fill run as prepared statements
(freshcache.prepared): the rows they return must invalidate, write through and fill exactly as
the inlined statements do. Without that option nothing is prepared, so a transaction-pooling
PgBouncer is safe.

On SQLite there is nothing to prepare; the same writes must leave the same fresh answers.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from freshcache import invalidate_model
from tests.conftest import on_another_connection
from tests.depsapp.models import Sample
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


def prepared_statements() -> list[str]:
    """The statements this connection holds prepared."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [s for (s,) in cursor.fetchall()]


def prepared_writes() -> list[str]:
    """Freshcache's writes this connection holds prepared (its returned column names mark
    them)."""
    return [s for s in prepared_statements() if "__freshcache_" in s]


def _threshold(value: int | None) -> Iterator[None]:
    """Set the driver connection's ``prepare_threshold`` for the test, with nothing prepared
    before it (earlier tests may have run with the matrix's prepared settings) or after."""
    connection.ensure_connection()
    raw = connection.connection
    if connection.vendor != "postgresql" or not hasattr(raw, "prepare_threshold"):
        yield
        return
    before = raw.prepare_threshold
    _deallocate()
    raw.prepare_threshold = value
    try:
        yield
    finally:
        raw.prepare_threshold = before
        _deallocate()


def _deallocate() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")


@pytest.fixture
def prepare() -> Iterator[None]:
    """Every statement prepared from its first run (the strictest setting)."""
    yield from _threshold(0)


@pytest.fixture
def no_prepare() -> Iterator[None]:
    """Django's default: psycopg prepares nothing."""
    yield from _threshold(None)


def db_post(pk: int) -> tuple[Any, ...] | None:
    def read() -> tuple[Any, ...] | None:
        row = Post.objects.nocache().filter(pk=pk).values_list("title", "category_id").first()
        return tuple(row) if row else None

    return on_another_connection(read)


@pytest.fixture
def two() -> tuple[Category, Category]:
    return Category.objects.create(title="a", slug="a"), Category.objects.create(
        title="b", slug="b"
    )


def reads(a: Category, b: Category, pk: int) -> tuple[Any, ...]:
    """Cached reads that depend on the post's title and category, and its row."""
    got = Post.objects.filter(pk=pk).values_list("title", "category_id").first()
    return (
        Post.objects.filter(category=a).count(),
        Post.objects.filter(category=b).count(),
        sorted(Post.objects.filter(category=a).values_list("title", flat=True)),
        tuple(got) if got else None,
    )


def assert_prepared(head: str) -> None:
    """On PostgreSQL, a statement of freshcache's starting with ``head`` is held prepared."""
    if connection.vendor == "postgresql":
        held = prepared_writes()
        assert any(s.startswith(head) for s in held), held


def retitle(pk: int, title: str) -> None:
    """The load-modify-save a view does: ``get(pk=)``, a new title, ``save()``."""
    loaded = Post.objects.get(pk=pk)
    loaded.title = title
    loaded.save()


def test_saves_run_prepared_and_each_one_invalidates(
    prepare: None, two: tuple[Category, Category]
) -> None:
    a, b = two
    post = Post.objects.create(title="t0", category=a)
    for i in range(1, 6):  # the first run prepares it, the later ones run the prepared one
        assert reads(a, b, post.pk) == (1, 0, [f"t{i - 1}"], (f"t{i - 1}", a.pk))
        retitle(post.pk, f"t{i}")
        assert reads(a, b, post.pk) == (1, 0, [f"t{i}"], (f"t{i}", a.pk))
        assert Post.objects.get(pk=post.pk).title == f"t{i}" == db_post(post.pk)[0]
    assert_prepared('UPDATE "testapp_post"')


def test_a_prepared_save_that_moves_the_row_invalidates_both_sides(
    prepare: None, two: tuple[Category, Category]
) -> None:
    a, b = two
    post = Post.objects.create(title="t", category=a)
    for target, counts in ((b, (0, 1)), (a, (1, 0)), (b, (0, 1))):
        before = reads(a, b, post.pk)
        loaded = Post.objects.get(pk=post.pk)
        loaded.category = target
        loaded.save()  # the guard finds the old category: the locking statement follows
        after = reads(a, b, post.pk)
        assert after != before
        assert after[:2] == counts
        assert after[3] == ("t", target.pk) == db_post(post.pk)


def test_prepared_deletes_invalidate(prepare: None, two: tuple[Category, Category]) -> None:
    a, b = two
    posts = [Post.objects.create(title=f"p{i}", category=a) for i in range(3)]
    for i, post in enumerate(posts):
        assert reads(a, b, post.pk)[0] == 3 - i
        Post.objects.get(pk=post.pk).delete()
        assert reads(a, b, post.pk) == (2 - i, 0, [f"p{j}" for j in range(i + 1, 3)], None)
        with pytest.raises(Post.DoesNotExist):
            Post.objects.get(pk=post.pk)
    assert_prepared('DELETE FROM "testapp_post"')


def test_a_prepared_save_inside_a_rolled_back_transaction_leaves_nothing_stale(
    prepare: None, two: tuple[Category, Category]
) -> None:
    a, b = two
    post = Post.objects.create(title="kept", category=a)
    assert reads(a, b, post.pk) == (1, 0, ["kept"], ("kept", a.pk))
    with pytest.raises(RuntimeError), transaction.atomic():
        retitle(post.pk, "dropped")
        assert reads(a, b, post.pk) == (1, 0, ["dropped"], ("dropped", a.pk))
        raise RuntimeError
    assert reads(a, b, post.pk) == (1, 0, ["kept"], ("kept", a.pk))
    assert Post.objects.get(pk=post.pk).title == "kept"


VALUES: list[dict[str, Any]] = [
    {
        "ratio": 0.1,
        "day": datetime.date(2024, 2, 29),
        "moment": datetime.time(23, 59, 59, 999999),
        "span": datetime.timedelta(days=1, microseconds=1),
        "data": {"a": [1, "x", None], "b": {"c": 1.5}},
        "blob": b"\x00\xffbytes",
        "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    },
    {"ratio": None, "day": None, "moment": None, "span": None, "data": None, "blob": None},
    {"data": [], "ratio": -0.0, "blob": b"", "span": datetime.timedelta(0)},
    {"data": "a string", "ref": None},
]


def sample_row(sample: Sample) -> tuple[Any, ...]:
    return tuple(
        bytes(v) if isinstance(v, memoryview) else v
        for v in (
            sample.ratio,
            sample.day,
            sample.moment,
            sample.span,
            sample.data,
            sample.blob,
            sample.ref,
        )
    )


def test_values_of_every_type_are_bound_and_written_through_as_stored(prepare: None) -> None:
    sample = Sample.objects.create()
    for values in VALUES:
        Sample.objects.get(pk=sample.pk)  # cached, and the instance saved below loaded from it
        loaded = Sample.objects.get(pk=sample.pk)
        for name, value in values.items():
            setattr(loaded, name, value)
        loaded.save()
        stored = on_another_connection(
            lambda: sample_row(Sample.objects.nocache().get(pk=sample.pk))
        )
        assert sample_row(Sample.objects.get(pk=sample.pk)) == stored
        for name, value in values.items():
            got = getattr(Sample.objects.get(pk=sample.pk), name)
            assert (bytes(got) if isinstance(got, memoryview) else got) == value
        invalidate_model(Sample)  # the next get() fills from the database
        assert sample_row(Sample.objects.get(pk=sample.pk)) == stored


def test_post_prices_and_times_are_bound_as_stored(prepare: None) -> None:
    category = Category.objects.create(title="c", slug="c")
    post = Post.objects.create(title="p", category=category)
    moment = datetime.datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=datetime.timezone.utc)
    for price in (Decimal("1.005"), Decimal("0"), None, Decimal("-999999.99")):
        Post.objects.get(pk=post.pk)
        loaded = Post.objects.get(pk=post.pk)
        loaded.price, loaded.created = price, moment
        loaded.save()
        stored = on_another_connection(
            lambda: Post.objects.nocache().values_list("price", "created").get(pk=post.pk)
        )
        again = Post.objects.get(pk=post.pk)
        assert (again.price, again.created) == tuple(stored)


def test_fast_get_fills_run_prepared_and_read_the_current_rows(prepare: None) -> None:
    categories = [Category.objects.create(title=f"t{i}", slug=f"s{i}") for i in range(4)]
    for round_ in range(3):
        for c in categories:
            assert Category.objects.get(slug=c.slug).title == f"{c.title}{'+' * round_}"
            assert Category.objects.get(pk=c.pk).title == f"{c.title}{'+' * round_}"
        # A write the fills must see: every cached get() above is invalidated.
        for c in categories:
            Category.objects.filter(pk=c.pk).update(title=f"{c.title}{'+' * (round_ + 1)}")
    if connection.vendor == "postgresql":
        selects = [s for s in prepared_statements() if s.startswith("SELECT")]
        assert any('"testapp_category"."slug" = $1' in s for s in selects), selects
        assert any('"testapp_category"."id" = $1' in s for s in selects), selects


def test_without_the_option_nothing_is_prepared(
    no_prepare: None, two: tuple[Category, Category]
) -> None:
    a, b = two
    post = Post.objects.create(title="t", category=a)
    for i in range(6):
        reads(a, b, post.pk)
        retitle(post.pk, f"t{i}")
        assert reads(a, b, post.pk) == (1, 0, [f"t{i}"], (f"t{i}", a.pk))
    Post.objects.get(pk=post.pk).delete()
    assert reads(a, b, post.pk) == (0, 0, [], None)
    for pk in (a.pk, b.pk, a.pk):
        invalidate_model(Category)
        assert Category.objects.get(pk=pk).slug in ("a", "b")
    assert prepared_statements() == []


def test_a_cursor_class_of_the_projects_own_is_kept(
    prepare: None, two: tuple[Category, Category]
) -> None:
    """A project's own ``OPTIONS["cursor_factory"]`` (here a subclass of Django's inlining
    cursor) stays in use for freshcache's statements: nothing is prepared, all stays fresh."""
    a, b = two
    post = Post.objects.create(title="t", category=a)
    raw = connection.connection
    before = getattr(raw, "cursor_factory", None)
    own = None
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql.base import Cursor

        own = raw.cursor_factory = type("ProjectCursor", (Cursor,), {})
    try:
        for i in range(4):
            reads(a, b, post.pk)
            retitle(post.pk, f"t{i}")
            assert reads(a, b, post.pk) == (1, 0, [f"t{i}"], (f"t{i}", a.pk))
            assert getattr(raw, "cursor_factory", None) is (own or before)
        assert prepared_statements() == []
    finally:
        if own is not None:
            raw.cursor_factory = before
