"""``aggregate()`` of recorded chains, served without building the aggregation query.

Each described call is read until it is served from its remembered key (no query, no
compilation), must equal Django's own answer value for value and type for type, and must follow
every kind of write. Calls the description cannot name completely must still compile every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Avg, Count, F, FloatField, Max, Min, Q, Sum

from freshcache import chains
from tests.test_chains import served, uncached
from tests.testapp.models import Author, Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


def typed(result: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """Values with their types: ``Decimal("2") == 2.0``, and a hit must give the same type."""
    return {k: (type(v), v) for k, v in result.items()}


AGGREGATES: dict[str, Callable[[], dict[str, Any]]] = {
    "sum and count": lambda: Post.objects.filter(category__slug="news").aggregate(
        total=Sum("price"), n=Count("id")
    ),
    "positional": lambda: Post.objects.filter(score__gte=2).aggregate(Sum("score"), Max("price")),
    "avg": lambda: Post.objects.exclude(author__isnull=True).aggregate(avg=Avg("score")),
    "min over a relation": lambda: Post.objects.all().aggregate(low=Min("category__title")),
    "count star": lambda: Post.objects.filter(visible=True).aggregate(n=Count("*")),
    "distinct": lambda: Post.objects.all().aggregate(
        authors=Count("author", distinct=True), scores=Sum("score", distinct=True)
    ),
    "empty": lambda: Post.objects.filter(score__gt=100).aggregate(
        total=Sum("price"), n=Count("id"), avg=Avg("score")
    ),
    "sliced": lambda: Post.objects.order_by("-score")[:3].aggregate(top=Sum("score")),
}


@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_aggregates_are_served_without_compiling(
    name: str, blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    read = AGGREGATES[name]
    expected = typed(uncached(read))
    assert typed(served(queries, compiles, read)) == expected


def test_types_are_djangos(blog: dict[str, Any], queries: Any, compiles: list[str]) -> None:
    def read() -> dict[str, Any]:
        return Post.objects.filter(score__lt=4).aggregate(
            total=Sum("price"), n=Count("id"), avg=Avg("score"), top=Max("score")
        )

    got = served(queries, compiles, read)
    assert got == {"total": Decimal("7.00"), "n": 4, "avg": 1.5, "top": 3}
    assert [type(got[k]) for k in ("total", "n", "avg", "top")] == [Decimal, int, float, int]


@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_every_kind_of_write_reaches_aggregate_reads(
    name: str, blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    read = AGGREGATES[name]
    writes: list[Callable[[], Any]] = [
        lambda: Post.objects.create(title="post 1b", category=blog["news"], score=11,
                                    price=Decimal("9.50"), author=blog["ann"]),
        lambda: Post.objects.filter(score=2).update(score=9, price=Decimal("0.10")),
        lambda: Post.objects.filter(score=4).update(visible=False),
        lambda: Post.objects.filter(score=7).delete(),
        lambda: Category.objects.filter(slug="news").update(title="Zzz"),
        lambda: Author.objects.filter(name="Ann").delete(),
        lambda: Post.objects.bulk_create([Post(title="p", category=blog["misc"], score=200)]),
    ]  # fmt: skip
    for write in writes:
        served(queries, compiles, read)
        write()
        assert typed(read()) == typed(uncached(read))
    obj = Post.objects.nocache().order_by("id").first()
    assert obj is not None
    served(queries, compiles, read)
    obj.score, obj.price, obj.author = 150, Decimal("99.99"), Author.objects.create(name="Bo")
    obj.save()
    assert typed(read()) == typed(uncached(read))


def test_calls_that_differ_are_told_apart(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    """Aliases, functions, fields, distinct and argument order all name different reads."""
    calls: list[Callable[[], dict[str, Any]]] = [
        lambda: Post.objects.aggregate(a=Sum("score")),
        lambda: Post.objects.aggregate(b=Sum("score")),
        lambda: Post.objects.aggregate(a=Avg("score")),
        lambda: Post.objects.aggregate(a=Sum("score", distinct=True)),
        lambda: Post.objects.aggregate(a=Sum("price")),
        lambda: Post.objects.aggregate(a=Sum("score"), b=Count("id")),
        lambda: Post.objects.aggregate(b=Count("id"), a=Sum("score")),
        lambda: Post.objects.aggregate(Sum("score")),
        lambda: Post.objects.filter(score__gt=3).aggregate(a=Sum("score")),
    ]
    Post.objects.filter(score=5).update(score=3)  # makes distinct differ from plain
    for call in calls:
        served(queries, compiles, call)
    for call in calls:
        got = call()
        assert typed(got) == typed(uncached(call))
        assert list(got) == list(uncached(call))  # the keys in Django's order


def test_calls_a_description_cannot_name_get_djangos_answer(
    blog: dict[str, Any], compiles: list[str]
) -> None:
    class MySum(Sum):
        pass

    calls: list[Callable[[], dict[str, Any]]] = [
        lambda: Post.objects.aggregate(s=Sum("score", filter=Q(visible=True))),
        lambda: Post.objects.aggregate(s=Sum("score", default=0)),
        lambda: Post.objects.aggregate(s=Sum("score", output_field=FloatField())),
        lambda: Post.objects.aggregate(s=Sum(F("score") * 2)),
        lambda: Post.objects.aggregate(s=Max("created")),  # temporal: the time zone in force
        lambda: Post.objects.aggregate(s=Count("tags")),  # many-to-many
        lambda: Category.objects.aggregate(s=Count("posts")),  # a reverse relation
        lambda: Post.objects.aggregate(s=MySum("score")),
        lambda: Post.objects.annotate(double=F("score") * 2).aggregate(s=Sum("double")),
        lambda: Post.objects.filter(Q(score=1) | Q(score=2)).aggregate(s=Sum("score")),
    ]
    for call in calls:
        expected = typed(uncached(call))
        for _ in range(3):
            compiles.clear()
            assert typed(call()) == expected
            assert compiles, "expected the general (compiled) path"


def test_djangos_errors_are_unchanged(blog: dict[str, Any]) -> None:
    for _ in range(2):
        with pytest.raises(TypeError, match="Complex aggregates require an alias"):
            Post.objects.filter(score=1).aggregate(Sum(F("score") + 1))
    assert Post.objects.filter(score=1).aggregate() == {}


def test_random_aggregates_name_the_compiled_statement(
    blog: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``verify`` on, every served call is also compiled and must give the key the chain
    named; every answer must be the database's, through writes."""
    monkeypatch.setattr(chains, "verify", True)
    rng = random.Random(11)
    functions = [Sum, Count, Avg, Min, Max]
    fields = ["score", "price", "id", "category", "author", "category__title", "title"]
    filters: list[tuple[str, Callable[[], object]]] = [
        ("score__gte", lambda: rng.randint(0, 8)),
        ("category__slug", lambda: rng.choice(["news", "misc"])),
        ("author__isnull", lambda: rng.choice([True, False])),
        ("visible", lambda: rng.choice([True, False])),
    ]

    def call() -> dict[str, Any]:
        qs = Post.objects.all()
        for _ in range(rng.randint(0, 2)):
            name, value = rng.choice(filters)
            qs = qs.filter(**{name: value()})
        aggregates = {}
        for i in range(rng.randint(1, 3)):
            function = rng.choice(functions)
            field = rng.choice(fields)
            if function in (Sum, Avg) and field in ("title", "category__title"):
                field = "score"
            distinct = function in (Sum, Count, Avg) and rng.random() < 0.3
            aggregates[f"a{i}"] = function(field, distinct=distinct)
        return qs.aggregate(**aggregates)

    for _ in range(40):
        state = rng.getstate()
        for _ in range(3):
            rng.setstate(state)
            got = typed(call())
            rng.setstate(state)
            assert got == typed(uncached(call))
        Post.objects.filter(score=rng.randint(0, 8)).update(
            score=rng.randint(0, 8), price=Decimal(rng.randint(0, 900)) / 100
        )


MANAGER_READS: dict[str, Callable[[], Any]] = {
    "count": lambda: Post.objects.count(),
    "exists": lambda: Post.objects.exists(),
    "fetch": lambda: [p.pk for p in Post.objects.all()],
    "aggregate": lambda: Post.objects.aggregate(total=Sum("score"), n=Count("id")),
    "filtering manager count": lambda: Post.visible_posts.count(),
    "filtering manager aggregate": lambda: Post.visible_posts.aggregate(total=Sum("score")),
    "filtering manager fetch": lambda: [p.pk for p in Post.visible_posts.all()],
}


@pytest.mark.parametrize("name", sorted(MANAGER_READS))
def test_reads_straight_from_a_manager_are_chains(
    name: str, blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    """``Post.objects.count()`` is the empty chain; a manager that filters starts a chain."""
    read = MANAGER_READS[name]
    assert served(queries, compiles, read) == uncached(read)
    Post.objects.filter(score=3).update(visible=False, score=30)
    assert read() == uncached(read)
    Post.objects.create(title="new", category=blog["misc"], score=5, visible=False)
    assert read() == uncached(read)


def test_managers_are_told_apart(blog: dict[str, Any], compiles: list[str]) -> None:
    Post.objects.filter(score__in=[0, 2]).update(visible=False)
    for _ in range(3):
        assert Post.objects.count() == 8
        assert Post.visible_posts.count() == 6
        assert Post.objects.aggregate(n=Count("id")) == {"n": 8}
        assert Post.visible_posts.aggregate(n=Count("id")) == {"n": 6}
    for _ in range(3):  # a manager's filter no chain records: compiled every time
        compiles.clear()
        assert Post.scored_posts.count() == 7
        assert Post.scored_posts.aggregate(n=Count("id")) == {"n": 7}
        assert len(compiles) == 2
