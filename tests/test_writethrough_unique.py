"""A save written through (freshcache.writethrough) also stores the row under its unique
fields' ``get(<field>=)`` entries, checked by the row stamp's token; and never leaves one of
those entries answering with a row a later write changed, moved the value away from, or gave
the value to.

``Category.slug`` is unique (and nullable). Its entries are filled only once this process has
served ``get(slug=)`` through the fast path (which vouches for its plan and registers the
scheme), so each test reads by slug first.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from freshcache import invalidate_model
from freshcache.store import store
from tests.conftest import on_another_connection
from tests.testapp.models import Badge, Category

pytestmark = pytest.mark.django_db(transaction=True)


def writes_through() -> bool:
    return connection.vendor == "postgresql" and store.backend.fills


def by_slug_in_db(slug: str) -> tuple[int, str] | None:
    """(pk, title) of the row holding ``slug``, read on a connection the cache never sees."""

    def read() -> tuple[int, str] | None:
        found = Category.objects.nocache().filter(slug=slug).first()
        return None if found is None else (found.pk, found.title)

    return on_another_connection(read)


def by_slug(slug: str) -> tuple[int, str] | None:
    """(pk, title) of ``Category.objects.get(slug=slug)`` through the cache, None if none."""
    try:
        found = Category.objects.get(slug=slug)
    except Category.DoesNotExist:
        return None
    return found.pk, found.title


def saved(pk: int, **changes: Any) -> None:
    """Load by pk (the load a save writes through from), change, save."""
    loaded = Category.objects.get(pk=pk)
    for name, value in changes.items():
        setattr(loaded, name, value)
    loaded.save()


@pytest.fixture
def news() -> Category:
    category = Category.objects.create(title="News", slug="news")
    assert by_slug("news") == (category.pk, "News")  # vouches for the fast plan, registers it
    return category


def test_the_next_get_by_the_unique_field_reads_the_saved_row(queries: Any, news: Category) -> None:
    saved(news.pk, title="Headlines")
    with queries() as q:
        assert by_slug("news") == by_slug_in_db("news") == (news.pk, "Headlines")
    assert q.count == (0 if writes_through() else 1)
    with queries() as q:
        assert Category.objects.get(pk=news.pk).title == "Headlines"
    assert q.count == (0 if writes_through() else 1)


def test_a_save_that_changes_the_value(queries: Any, news: Category) -> None:
    """The old value's entry must answer DoesNotExist, the new value's the row. (A save that
    changes a column some stamp is keyed by is not written through at all: the guarded
    statement covers only saves that keep them.)"""
    assert by_slug("fresh") is None
    saved(news.pk, slug="fresh", title="Fresh")
    assert by_slug("news") is None is by_slug_in_db("news")
    assert by_slug("fresh") == by_slug_in_db("fresh") == (news.pk, "Fresh")
    saved(news.pk, title="Fresher")
    with queries() as q:
        assert by_slug("fresh") == by_slug_in_db("fresh") == (news.pk, "Fresher")
    assert q.count == (0 if writes_through() else 1)
    assert by_slug("news") is None


def test_another_row_takes_the_value_the_saved_row_gave_up(news: Category) -> None:
    saved(news.pk, title="Still news")
    assert by_slug("news") == (news.pk, "Still news")
    other = Category.objects.create(title="Other", slug="other")
    saved(news.pk, slug="old-news")
    saved(other.pk, slug="news")
    assert by_slug("news") == by_slug_in_db("news") == (other.pk, "Other")
    assert by_slug("old-news") == by_slug_in_db("old-news") == (news.pk, "Still news")


def test_later_writes_of_any_kind_invalidate_the_entry(news: Category) -> None:
    saved(news.pk, title="Filled")
    assert by_slug("news") == (news.pk, "Filled")
    Category.objects.filter(pk=news.pk).update(title="Updated")
    assert by_slug("news") == by_slug_in_db("news") == (news.pk, "Updated")
    saved(news.pk, title="Filled again")
    on_another_connection(lambda: Category.objects.filter(slug="news").update(title="Theirs"))
    assert by_slug("news") == by_slug_in_db("news") == (news.pk, "Theirs")
    saved(news.pk, title="And again")
    Category.objects.filter(pk=news.pk).delete()
    assert by_slug("news") is None is by_slug_in_db("news")


def test_a_write_committed_after_ours_is_never_hidden_by_ours(news: Category) -> None:
    """Another process writes the row after our UPDATE committed and invalidates before our
    invalidation runs: ours must store nothing under the slug either."""
    loaded = Category.objects.get(pk=news.pk)

    def theirs() -> None:
        Category.objects.filter(pk=news.pk).update(title="Theirs")
        assert by_slug("news") == (news.pk, "Theirs")  # fills their entry, too

    def then_theirs(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE"):
            on_another_connection(theirs)
        return result

    loaded.title = "Ours"
    with connection.execute_wrapper(then_theirs):
        loaded.save()
    assert by_slug("news") == by_slug_in_db("news") == (news.pk, "Theirs")


def test_nothing_is_stored_under_a_scheme_the_registry_does_not_list(
    queries: Any, news: Category
) -> None:
    """After ``invalidate_model`` the registry is new and lists only what was read since (the
    primary key here): a writer would not delete the slug's stamp, so no entry may depend on
    it until a read registers it again."""
    invalidate_model(Category)
    saved(news.pk, title="Unlisted")
    with queries() as q:
        assert by_slug("news") == by_slug_in_db("news") == (news.pk, "Unlisted")
    assert q.count == 1
    saved(news.pk, title="Listed")  # the read above listed the slug again
    with queries() as q:
        assert by_slug("news") == (news.pk, "Listed")
    assert q.count == (0 if writes_through() else 1)


def test_a_null_value_fills_nothing_and_breaks_nothing(queries: Any, news: Category) -> None:
    saved(news.pk, slug=None, title="No slug")
    assert by_slug("news") is None is by_slug_in_db("news")
    assert Category.objects.get(pk=news.pk).title == "No slug"
    saved(news.pk, title="Still no slug")
    assert Category.objects.get(pk=news.pk).title == "Still no slug"
    saved(news.pk, slug="news", title="Slug back")
    saved(news.pk, title="Slug kept")
    with queries() as q:
        assert by_slug("news") == by_slug_in_db("news") == (news.pk, "Slug kept")
    assert q.count == (0 if writes_through() else 1)


def test_a_field_that_stores_another_value_than_it_compares(queries: Any) -> None:
    """The column holds ``enc:<code>``: the row returned holds no value a ``get(code=)`` would
    find it by, so nothing is stored under one (``get(code="enc:x")`` finds no row)."""
    badge = Badge.objects.create(code="x", title="first")
    assert Badge.objects.get(code="x").title == "first"
    loaded = Badge.objects.get(pk=badge.pk)
    loaded.title = "second"
    loaded.save()
    assert Badge.objects.get(code="x").title == "second"
    with pytest.raises(Badge.DoesNotExist):
        Badge.objects.get(code="enc:x")
