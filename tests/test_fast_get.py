"""``get(<field>=value)`` served without compiling SQL (freshcache.fastget).

Each test reads through the fast path, writes, and reads again: the second read would be stale if
the fast path's plan missed the write. Querysets of any other shape must give Django's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.db.models.lookups import Exact
from django.test import override_settings

from freshcache import fastget
from freshcache.signals import cache_read
from freshcache.store import Plan
from tests.testapp.models import Author, Category, Post, Restaurant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_reads() -> Iterator[list[str]]:
    """Names the fields each fast-path read used (a read the fast path declined is not listed)."""
    seen: list[str] = []
    original = fastget._get

    def spy(qs: Any, model: Any, shape: Any, field: Any, *args: Any) -> Any:
        seen.append(f"{model._meta.model_name}.{field.name}")
        return original(qs, model, shape, field, *args)

    fastget._get = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        fastget._get = original  # type: ignore[assignment]


def cached(queries: Any, read: Any) -> Any:
    read()
    with queries() as q:
        value = read()
    assert q.count == 0, q.context.captured_queries
    return value


def test_pk_unique_field_and_foreign_key_hits(queries: Any, fast_reads: list[str]) -> None:
    category = Category.objects.create(title="one", slug="one")
    post = Post.objects.create(title="a", category=category, price=Decimal("1.50"))
    assert cached(queries, lambda: Category.objects.get(pk=category.pk)).title == "one"
    assert cached(queries, lambda: Category.objects.get(id__exact=category.pk)).slug == "one"
    assert cached(queries, lambda: Category.objects.get(slug="one")).pk == category.pk
    got = cached(queries, lambda: Post.objects.get(pk=post.pk))
    assert (got.title, got.price, got.category_id) == ("a", Decimal("1.50"), category.pk)
    assert cached(queries, lambda: Post.objects.get(pk=post.pk).category).slug == "one"
    assert {"category.id", "category.slug", "post.id"} <= set(fast_reads)


def test_instances_are_the_orms(fast_reads: list[str]) -> None:
    category = Category.objects.create(title="one", slug="one")
    for _ in range(2):
        got = Category.objects.get(pk=category.pk)
        assert got == category and got._state.db == "default" and not got._state.adding
        assert got.__dict__.keys() >= {"id", "title", "slug"}
    assert fast_reads == ["category.id", "category.id"]


def test_update_delete_and_insert_invalidate(queries: Any) -> None:
    category = Category.objects.create(title="one", slug="one")
    cached(queries, lambda: Category.objects.get(pk=category.pk))
    cached(queries, lambda: Category.objects.get(slug="one"))
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="uno")
    category.title, category.slug = "uno", "uno"
    category.save()
    assert Category.objects.get(pk=category.pk).title == "uno"
    assert Category.objects.get(slug="uno").pk == category.pk
    with pytest.raises(Category.DoesNotExist, match="Category matching query does not exist"):
        Category.objects.get(slug="one")
    Category.objects.filter(pk=category.pk).update(title="dos")
    assert Category.objects.get(slug="uno").title == "dos"
    again = Category.objects.create(title="one again", slug="one")
    assert Category.objects.get(slug="one").pk == again.pk
    category.delete()
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(pk=category.pk)


def test_write_in_a_transaction_then_read(queries: Any) -> None:
    category = Category.objects.create(title="one", slug="one")
    cached(queries, lambda: Category.objects.get(pk=category.pk))
    with transaction.atomic():
        Category.objects.filter(pk=category.pk).update(title="two")
        assert Category.objects.get(pk=category.pk).title == "two"  # dirty: the database
    assert Category.objects.get(pk=category.pk).title == "two"


def test_other_shapes_take_the_general_path(queries: Any, fast_reads: list[str]) -> None:
    one = Category.objects.create(title="one", slug="one")
    Category.objects.create(title="two", slug="two")
    with pytest.raises(Category.DoesNotExist):
        Category.objects.filter(title="two").get(pk=one.pk)
    assert Category.objects.only("title").get(pk=one.pk).title == "one"
    assert Category.objects.exclude(slug="x").get(pk=one.pk).slug == "one"
    assert Category.objects.get(pk=one.pk, slug="one").title == "one"
    assert Category.objects.get(title="one").pk == one.pk  # not unique: still fine
    assert Category.objects.values("title").get(pk=one.pk) == {"title": "one"}
    assert fast_reads == ["category.title"]
    Category.objects.filter(pk=one.pk).update(title="uno")
    assert Category.objects.only("title").get(pk=one.pk).title == "uno"
    assert Category.objects.filter(slug="one").get(pk=one.pk).title == "uno"


def test_multiple_objects_and_type_of_value(queries: Any) -> None:
    Author.objects.create(name="Ann")
    Author.objects.create(name="Ann")
    with pytest.raises(Author.MultipleObjectsReturned, match="it returned 2"):
        Author.objects.get(name="Ann")
    with pytest.raises(Author.MultipleObjectsReturned):
        Author.objects.get(name="Ann")
    bob = Author.objects.create(name="Bob")
    assert Author.objects.get(pk=str(bob.pk)).name == "Bob"
    assert Author.objects.get(pk=bob.pk).name == "Bob"
    with pytest.raises(ValueError):
        Author.objects.get(pk="not a number")


def test_multi_table_children_are_not_fast(fast_reads: list[str]) -> None:
    r = Restaurant.objects.create(name="Pizza", serves_pizza=True)
    assert Restaurant.objects.get(pk=r.pk).serves_pizza
    Restaurant.objects.filter(pk=r.pk).update(name="Pasta")
    assert Restaurant.objects.get(pk=r.pk).name == "Pasta"
    assert fast_reads == []


def test_cache_options_and_signal(queries: Any) -> None:
    category = Category.objects.create(title="one", slug="one")
    events: list[bool] = []

    def on_read(sender: Any, hit: bool, **kwargs: Any) -> None:
        events.append(hit)

    cache_read.connect(on_read)
    try:
        Category.objects.get(pk=category.pk)
        Category.objects.get(pk=category.pk)
    finally:
        cache_read.disconnect(on_read)
    assert events == [False, True]
    Category.objects.nocache().get(pk=category.pk)
    with queries() as q:
        Category.objects.nocache().get(pk=category.pk)
        Category.objects.cache(ops=["fetch"]).get(pk=category.pk)
    assert q.count == 2
    with override_settings(FRESHCACHE_ENABLED=False), queries() as q:
        Category.objects.get(pk=category.pk)
    assert q.count == 1


def test_a_registered_exact_lookup_is_left_to_the_general_path(
    queries: Any, fast_reads: list[str]
) -> None:
    class Folded(Exact):
        """An ``exact`` that is not Django's: its SQL may compare otherwise."""

        lookup_name = "exact"

    field = Author._meta.get_field("email")
    field.register_lookup(Folded)
    try:
        Author.objects.create(name="Ann", email="a@example.com")
        assert Author.objects.get(email="a@example.com").name == "Ann"
        Author.objects.filter(name="Ann").update(name="Bea")
        with queries() as q:
            assert Author.objects.get(email="a@example.com").name == "Bea"
        assert q.count == 1  # the walker cannot vouch for it either: never cached
        assert fast_reads == []
    finally:
        field._unregister_lookup(Folded)


def test_a_plan_the_walker_disagrees_with_is_never_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The safety net itself: given a plan that is not the walker's, nothing is stored and the
    field leaves the fast path."""
    ann = Author.objects.create(name="Ann", email="a@example.com")
    qs = Author.objects.all()
    field = Author._meta.get_field("name")
    query = Author.objects.filter(name="Ann").order_by()[:21].query
    wrong = {"testapp_author": frozenset({(("email", "a@example.com"),)})}
    read = fastget._Read(qs, Author, field, ("name", "Ann"), "Ann", "default", None, "k",
                         Plan.build(wrong, "p:"), wrong, 60)  # fmt: skip
    try:
        with caplog.at_level(logging.WARNING, logger="freshcache"):
            assert not fastget._vouched(query, read)
        assert "served by the general path" in caplog.text
        assert Author.objects.get(name="Ann").pk == ann.pk  # still right, by the general path
        assert (Author, "name") in fastget._disabled
    finally:
        fastget._disabled.clear()


@pytest.fixture
def compiled_fills() -> Iterator[list[str]]:
    """Lists the fills that went through ``filter()`` and the compiler (the others ran the
    statement learned from an earlier fill)."""
    seen: list[str] = []
    original = fastget._compiled_fill
    fastget._statements.clear()

    def spy(read: Any, *args: Any) -> Any:
        seen.append(f"{read.field.name}={read.prepped!r}")
        return original(read, *args)

    fastget._compiled_fill = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        fastget._compiled_fill = original  # type: ignore[assignment]


def test_later_fills_send_the_statement_django_compiles(
    queries: Any, compiled_fills: list[str]
) -> None:
    """The first fill of a field compiles; the next fills run the same statement directly and
    give what Django's own get() gives, including its errors."""
    one, two, three = (Category.objects.create(title=t, slug=t) for t in ("one", "two", "3"))
    assert Category.objects.get(pk=one.pk).title == "one"
    assert Category.objects.get(slug="one").pk == one.pk
    assert compiled_fills == [f"id={one.pk}", "slug='one'"]
    for pk, title in ((two.pk, "two"), (str(three.pk), "3")):
        with queries() as q:
            got = Category.objects.get(pk=pk)
        with queries() as own:
            expected = Category.objects.nocache().get(pk=pk)
        assert got == expected and (got.title, got.slug) == (title, title)
        assert [x["sql"] for x in q.context.captured_queries] == [
            x["sql"] for x in own.context.captured_queries
        ]
    assert cached(queries, lambda: Category.objects.get(slug="two")).pk == two.pk
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="")
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(pk=three.pk + 100)
    assert compiled_fills == [f"id={one.pk}", "slug='one'"]
    Category.objects.filter(pk=three.pk).update(title="Three")
    assert Category.objects.get(title="Three").pk == three.pk  # a str field of its own
    assert compiled_fills[-1] == "title='Three'"
    assert Category.objects.get(title="two").pk == two.pk
    assert len(compiled_fills) == 3
    Author.objects.create(name="Ann")
    assert Author.objects.get(name="Ann").name == "Ann"
    Author.objects.create(name="Ann")
    with pytest.raises(Author.MultipleObjectsReturned, match="it returned 2"):
        Author.objects.get(name="Ann")
    assert compiled_fills[-1] == "name='Ann'" and len(compiled_fills) == 4


def test_values_stored_by_learned_fills_are_invalidated(
    queries: Any, compiled_fills: list[str]
) -> None:
    one, two = (Category.objects.create(title=t, slug=t) for t in ("one", "two"))
    Category.objects.get(pk=one.pk)
    Category.objects.get(slug="one")
    assert cached(queries, lambda: Category.objects.get(pk=two.pk)).title == "two"
    assert cached(queries, lambda: Category.objects.get(slug="two")).title == "two"
    assert len(compiled_fills) == 2
    two.title = "deux"
    two.save()
    assert Category.objects.get(pk=two.pk).title == "deux"
    assert Category.objects.get(slug="two").title == "deux"
    Category.objects.filter(pk=two.pk).update(slug="zwei")
    assert Category.objects.get(pk=two.pk).slug == "zwei"
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(slug="two")
    assert Category.objects.get(slug="zwei").pk == two.pk
    Category.objects.filter(pk=two.pk).delete()
    with pytest.raises(Category.DoesNotExist):
        Category.objects.get(pk=two.pk)
    assert len(compiled_fills) == 2


def test_a_statement_is_learned_per_connection_class_and_value_type(
    compiled_fills: list[str],
) -> None:
    """A str value of an int key is converted before it is sent, so it shares the int's
    statement; a fill that cannot store (inside a transaction that wrote) teaches nothing."""
    one = Category.objects.create(title="one", slug="one")
    with transaction.atomic():
        Category.objects.create(title="two", slug="two")
        assert Category.objects.get(pk=one.pk).title == "one"
    assert compiled_fills == []  # a dirty transaction takes Django's get()
    assert Category.objects.get(pk=str(one.pk)).title == "one"
    assert Category.objects.get(pk=one.pk + 1).title == "two"
    assert compiled_fills == [f"id={one.pk}"]
    keys = list(fastget._statements)
    assert [(k[0], k[1], k[3]) for k in keys] == [(Category, "id", int)]


def _outcome(read: Any) -> Any:
    try:
        return read().pk
    except Exception as exc:  # the exception's type is the outcome compared
        return type(exc)


@pytest.mark.parametrize("value", [1 << 63, -(1 << 63) - 1, 1 << 64, 1 << 40])
def test_an_integer_out_of_the_columns_range_gets_djangos_answer(value: int) -> None:
    """Django 5.0+ answers ``DoesNotExist`` without a query for an integer its column cannot
    hold (1 << 40 for an ``IntegerField`` on PostgreSQL); the fast path must not send one."""
    author = Author.objects.create(name="Ann")
    assert Author.objects.get(pk=author.pk).name == "Ann"  # the statement is learned
    truth = _outcome(lambda: Author.objects.nocache().get(pk=value))
    assert _outcome(lambda: Author.objects.get(pk=value)) == truth
    assert _outcome(lambda: Post.objects.get(category_id=value)) == _outcome(
        lambda: Post.objects.nocache().get(category_id=value)
    )
