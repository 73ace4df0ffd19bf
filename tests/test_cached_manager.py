"""Seed 002's CachedManager: ``from_cache`` and ``objects_by_pks``, now invalidated."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models.manager import BaseManager

from freshcache import CachedManager, NotInt, bump_version
from freshcache.fallback import hints
from tests.flashapp.helpers import Calls, backend_calls
from tests.flashapp.models import Article, User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def articles() -> list[Article]:
    return [
        Article.objects.create(title="one", featured=True),
        Article.objects.create(title="two"),
        Article.objects.create(title="three", featured=True),
    ]


def by_pk(pk: Any) -> Any:
    return Article.objects.from_cache("article:{pk}", {"pk": pk}, one_item=True)


def test_manager_is_a_django_manager() -> None:
    assert isinstance(Article.objects, CachedManager)
    assert isinstance(Article.objects, BaseManager)
    assert Article.objects.filter(featured=True).count() == 0  # everything else still works
    assert Article.objects._from_cache == Article.objects.from_cache
    assert Article.objects._objects_by_pks == Article.objects.objects_by_pks


def test_one_item_by_pk_is_cached_and_invalidated(articles: list[Article], queries: Any) -> None:
    first = articles[0]
    with queries() as q:
        assert by_pk(first.pk) == first
    assert q.count == 1
    with queries() as q:
        assert by_pk(first.pk).title == "one"
    assert q.count == 0
    Article.objects.filter(pk=first.pk).update(title="ONE")
    assert by_pk(first.pk).title == "ONE"
    articles[1].save()  # another row: the cached item stays
    with queries() as q:
        assert by_pk(first.pk).title == "ONE"
    assert q.count == 0


def test_list_by_kwargs_is_granular(articles: list[Article], queries: Any) -> None:
    def featured() -> list[str]:
        found = Article.objects.from_cache("articles:featured:{featured}", {"featured": True})
        return [a.title for a in found]

    assert featured() == ["one", "three"]
    Article.objects.create(title="four")  # not featured: the featured list is unchanged
    with queries() as q:
        assert featured() == ["one", "three"]
    assert q.count == 0
    Article.objects.filter(title="two").update(featured=True)
    assert featured() == ["one", "two", "three"]
    Article.objects.filter(title="one").delete()
    assert featured() == ["two", "three"]


def test_const_kwargs_filter_without_entering_the_key(articles: list[Article]) -> None:
    author = User.objects.create(username="ann")
    Article.objects.filter(title="three").update(author=author)
    found = Article.objects.from_cache(
        "featured_by:{author_id}", {"author_id": author.pk}, const_kwargs={"featured": True}
    )
    assert [a.title for a in found] == ["three"]
    # Same key, other constants: the stored value is returned, as the seed's manager does.
    again = Article.objects.from_cache(
        "featured_by:{author_id}", {"author_id": author.pk}, const_kwargs={"featured": False}
    )
    assert [a.title for a in again] == ["three"]


def test_each_distinct_kwargs_has_its_own_key(articles: list[Article]) -> None:
    """A template that does not name every kwarg, or values that format alike (``None`` and
    ``"None"``), must not share one stored value between different lookups."""

    def titles(**kwargs: Any) -> list[str]:
        return [a.title for a in Article.objects.from_cache("articles:{title}", kwargs)]

    assert titles(title="one", featured=False) == []
    assert titles(title="one", featured=True) == ["one"]
    assert titles(title=None) == []
    Article.objects.create(title="None")
    assert titles(title="None") == ["None"]


def test_int_only_and_none_on_error(articles: list[Article], queries: Any) -> None:
    pk = articles[0].pk

    def get(value: Any, **options: Any) -> Any:
        return Article.objects.from_cache(
            "a:{pk}", {"pk": value}, one_item=True, int_only=True, **options
        )

    assert get(str(pk)) == articles[0]
    with queries() as q:
        assert get(pk) == articles[0]  # "5" and 5 share the key
    assert q.count == 0
    assert get("five") is None
    assert get(None) is None
    with pytest.raises(NotInt, match="not integers"):
        get("five", none_on_error=False)
    assert get(9999) is None  # a missing row, cached as None until it appears
    with queries() as q:
        assert get(9999) is None
    assert q.count == 0
    Article.objects.create(pk=9999, title="late")
    assert get(9999).title == "late"
    with pytest.raises(Article.DoesNotExist):
        get(8888, none_on_error=False)


def test_only_and_percent_style_keys(articles: list[Article], queries: Any) -> None:
    found = Article.objects.from_cache(
        "titles:%(featured)s", {"featured": True}, only=["title"], empty_value=None
    )
    assert [a.title for a in found] == ["one", "three"]
    assert found[0].get_deferred_fields() == {"body", "featured", "author_id"}
    with queries() as q:
        again = Article.objects.from_cache("titles:%(featured)s", {"featured": True})
    assert q.count == 0 and [a.title for a in again] == ["one", "three"]


def test_objects_by_pks_one_round_trip_order_and_misses(
    articles: list[Article], queries: Any
) -> None:
    pks = [a.pk for a in reversed(articles)]
    calls = Calls()

    def get_item(pk: Any) -> Any:
        calls()
        return by_pk(pk)

    assert Article.objects.objects_by_pks(get_item, pks, "article:{pk}") == articles[::-1]
    assert calls.n == 3
    with queries() as q, backend_calls() as trips:
        result = Article.objects.objects_by_pks(get_item, pks, "article:{pk}")
    assert result == articles[::-1]
    assert (calls.n, q.count, dict(trips)) == (3, 0, {"get_many": 1})
    Article.objects.filter(pk=articles[1].pk).update(title="TWO")
    with queries() as q:
        result = Article.objects._objects_by_pks(get_item, pks, "article:%(pk)s")
    assert [a.title for a in result] == ["three", "TWO", "one"]
    assert (calls.n, q.count) == (4, 1)  # only the changed item was computed
    Article.objects.filter(pk=articles[0].pk).delete()
    assert Article.objects.objects_by_pks(get_item, pks, "article:{pk}")[2] is None
    hints.clear()  # a fresh process: values first, then all their stamps
    with backend_calls() as trips:
        Article.objects.objects_by_pks(get_item, pks, "article:{pk}")
    assert trips["get_many"] == 2


def test_bump_version_reaches_cached_manager(articles: list[Article], queries: Any) -> None:
    by_pk(articles[0].pk)
    bump_version(Article)
    with queries() as q:
        by_pk(articles[0].pk)
    assert q.count == 1


def test_a_related_manager_keys_its_own_rows() -> None:
    """``user.articles`` is a CachedManager that filters by its user: each user's value is
    its own, and a write to one user's articles reaches that value."""
    bart = User.objects.create(username="bart", name="Bart")
    ned = User.objects.create(username="ned", name="Ned")
    mine = Article.objects.create(title="b", author=bart)
    Article.objects.create(title="n", author=ned)
    assert [a.title for a in bart.articles.from_cache("mine")] == ["b"]
    assert [a.title for a in ned.articles.from_cache("mine")] == ["n"]
    assert [a.title for a in Article.objects.from_cache("mine")] == ["b", "n"]
    mine.title = "b2"
    mine.save()
    assert [a.title for a in bart.articles.from_cache("mine")] == ["b2"]
    assert [a.title for a in ned.articles.from_cache("mine")] == ["n"]
    assert [a.title for a in Article.objects.from_cache("mine")] == ["b2", "n"]


def test_a_manager_with_a_queryset_of_its_own() -> None:
    class Featured(CachedManager):
        def get_queryset(self) -> Any:
            return super().get_queryset().filter(featured=True)

    featured = Featured()
    featured.model = Article
    featured.name = "featured"
    plain = Article.objects.create(title="plain")
    star = Article.objects.create(title="star", featured=True)
    assert [a.title for a in Article.objects.from_cache("all")] == ["plain", "star"]
    assert [a.title for a in featured.from_cache("all")] == ["star"]
    pks = [star.pk, plain.pk]
    for manager, expected in ((featured, [star, None]), (Article.objects, [star, plain])):
        for _ in range(2):  # computed, then read in one round trip

            def one(pk: Any, manager: Any = manager) -> Any:
                return manager.from_cache("one:{pk}", {"pk": pk}, one_item=True)

            assert manager.objects_by_pks(one, pks, "one:{pk}") == expected
