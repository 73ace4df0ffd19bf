"""Chains of ``filter``/``exclude``/``order_by``/slices read without compiling (freshcache.chains).

Every test reads a chain until it is served from its remembered key (no query, no compilation),
writes, and reads again: the read after the write would be stale if the chain's key or plan were
not exactly the general path's. Querysets a chain cannot describe must still get Django's answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.db.models import CharField, F, Q, QuerySet
from django.db.models.lookups import Exact
from django.db.models.signals import post_init
from django.test.utils import register_lookup

from freshcache import chains
from freshcache.conf import settings
from freshcache.signals import cache_read
from tests.testapp.models import Author, Category, Comment, Post, Profile, Tag

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Django 6.1 deprecates select_related() with no arguments; it works until 2028, so the
    # chains still cover it.
    pytest.mark.filterwarnings("ignore:Calling select_related\\(\\) with no arguments"),
]


@pytest.fixture(autouse=True)
def no_chains_known() -> None:
    """Each test learns its chains itself: one test's memo must not decide another's path."""
    chains._memo.clear()


def _plain(value: Any, within: frozenset[int] = frozenset()) -> Any:
    if isinstance(value, list):
        return [_plain(o) for o in value]
    if hasattr(value, "_state"):
        fields = {k: v for k, v in vars(value).items() if k != "_state"}
        # The related objects select_related() filled in count: a stale one is a stale read.
        # (A one-to-one's reverse side points back: not followed twice.)
        inside = within | {id(value)}
        related = {
            k: _plain(v, inside)
            for k, v in value._state.fields_cache.items()
            if id(v) not in inside
        }
        return (type(value), fields, related)
    return value


def uncached(read: Callable[[], Any]) -> Any:
    """What ``read`` returns from the database itself: freshcache switched off for the call
    (without the settings reset that would also forget the chains learned so far)."""
    before = settings.ENABLED
    settings.__dict__["ENABLED"] = False
    try:
        return _plain(read())
    finally:
        settings.__dict__["ENABLED"] = before


def served(queries: Any, compiles: list[str], read: Callable[[], Any]) -> Any:
    """Read until the chain is known and cached, then once more: no query, no compilation."""
    read()
    read()
    compiles.clear()
    with queries() as q:
        value = read()
    assert q.count == 0, q.context.captured_queries
    assert compiles == [], compiles
    return _plain(value)


READS: dict[str, Callable[[], Any]] = {
    "count": lambda: Post.objects.filter(category__slug="news").count(),
    "exists": lambda: Post.objects.filter(score__gte=6, visible=True).exists(),
    "fetch": lambda: list(Post.objects.filter(score__lt=5).order_by("-score")[:3]),
    "exclude": lambda: list(Post.objects.exclude(author__isnull=True).order_by("id")),
    "in": lambda: Post.objects.filter(score__in=[1, 2, 7]).count(),
    "icontains": lambda: list(Post.objects.filter(title__icontains="POST 1").order_by("pk")),
    "first": lambda: Post.objects.filter(category_id__gt=0).order_by("score").first(),
    "all": lambda: list(Post.objects.all().order_by("id")[2:5]),
    "range": lambda: Post.objects.filter(score__range=(2, 4)).exclude(title="post 3").count(),
    "select_related": lambda: list(
        Post.objects.select_related("category", "author").filter(score__lt=6).order_by("id")
    ),
    "select_related()": lambda: list(
        Post.objects.filter(visible=True).select_related().order_by("-id")[:5]
    ),
    "select_related nested": lambda: list(
        Comment.objects.select_related("post__author").filter(text__startswith="c").order_by("id")
    ),
}


@pytest.mark.parametrize("name", sorted(READS))
def test_chains_are_served_without_compiling(
    name: str, blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    read = READS[name]
    expected = uncached(read)
    if name == "first":
        hit = served(queries, compiles, lambda: [read()])
        assert hit == _plain([Post.objects.nocache().order_by("score")[0]])
    else:
        assert served(queries, compiles, read) == expected


@pytest.mark.parametrize("name", sorted(READS))
def test_every_kind_of_write_reaches_chain_reads(
    name: str, blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    read = READS[name]

    def same() -> None:
        got = _plain([read()] if name == "first" else read())
        assert got == uncached(lambda: [read()] if name == "first" else read())

    writes: list[Callable[[], Any]] = [
        lambda: Post.objects.create(title="post 1b", category=blog["news"], score=1),
        lambda: Post.objects.filter(score=2).update(score=9),
        lambda: Post.objects.filter(score=4).update(visible=False, title="POST 14"),
        lambda: Post.objects.filter(score=7).delete(),
        lambda: Category.objects.filter(slug="news").update(slug="old-news"),
        lambda: Category.objects.filter(slug="misc").update(title="Misc 2"),
        lambda: Author.objects.filter(name="Ann").update(email="ann@example.com"),
        lambda: Comment.objects.filter(text="c1").update(text="c1 edited"),
        lambda: Author.objects.filter(name="Ann").delete(),
        lambda: Post.objects.bulk_create([Post(title="post 10", category=blog["misc"], score=0)]),
    ]
    for write in writes:
        served(queries, compiles, read)
        write()
        same()
    obj = Post.objects.nocache().order_by("id").first()
    assert obj is not None
    served(queries, compiles, read)
    obj.score, obj.title, obj.author = 3, "post 1c", Author.objects.create(name="Bo")
    obj.save()
    same()
    served(queries, compiles, read)
    category = obj.category
    category.title = "renamed"
    category.save()  # only the related object changes
    same()


def test_instances_are_the_orms(blog: dict[str, Any], queries: Any, compiles: list[str]) -> None:
    def read() -> list[Post]:
        return list(Post.objects.filter(category=blog["news"].pk).order_by("id"))

    got = served(queries, compiles, read)
    assert got == uncached(read)
    objs = read()
    assert all(o._state.db == "default" and not o._state.adding for o in objs)
    assert objs[0].category == blog["news"]  # the foreign key descriptor still works
    assert objs[0].price == Decimal("1.25") and isinstance(objs[0].price, Decimal)
    objs[0].title = "changed"
    objs[0].save()
    assert Post.objects.filter(category=blog["news"].pk).order_by("id")[0].title == "changed"


def test_select_related_instances_are_the_orms(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    def read() -> list[Post]:
        return list(Post.objects.select_related("category", "author").order_by("id"))

    assert served(queries, compiles, read) == uncached(read)
    with queries() as q:
        posts = read()
        pairs = [(p.category.title, p.author.name if p.author else None) for p in posts]
    assert q.count == 0  # the related objects came with the rows: no query on access
    assert pairs[:4] == [("Misc", None), ("News", "Ann"), ("Misc", "Ann"), ("News", None)]
    assert all(p.category._state.db == "default" and not p.category._state.adding for p in posts)
    assert isinstance(posts[1].price, Decimal)

    ann = blog["ann"]
    Profile.objects.create(author=ann, bio="hi")

    def profiles() -> list[Profile]:
        return list(Profile.objects.select_related("author").filter(bio="hi"))

    served(queries, compiles, profiles)
    with queries() as q:
        (profile,) = profiles()
        assert profile.author.name == "Ann"
        assert profile.author.profile is profile  # one-to-one: the reverse side is set too
    assert q.count == 0
    Author.objects.filter(pk=ann.pk).update(name="Annie")
    assert profiles()[0].author.name == "Annie"


def test_init_signals_are_still_sent(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    def read() -> list[Post]:
        return list(Post.objects.filter(score__gt=3).order_by("id"))

    served(queries, compiles, read)
    seen: list[int] = []

    def receiver(sender: Any, instance: Post, **kwargs: Any) -> None:
        seen.append(instance.pk)

    post_init.connect(receiver, sender=Post)
    try:
        objs = served(queries, compiles, read)
    finally:
        post_init.disconnect(receiver, sender=Post)
    assert len(seen) >= len(objs) == 4


def test_values_are_type_tagged(queries: Any, compiles: list[str]) -> None:
    news = Category.objects.create(title="News", slug="news")
    Post.objects.create(title="1", category=news)
    Post.objects.create(title="True", category=news)

    def titles(value: object) -> list[str]:
        return [p.title for p in Post.objects.filter(title=value)]

    served(queries, compiles, lambda: titles(True))
    assert titles(True) == ["True"]
    assert titles(1) == ["1"]
    assert titles("1") == ["1"]
    assert titles(1.0) == []  # "1.0"


def test_edits_behind_the_methods_back_are_seen(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    served(queries, compiles, lambda: Post.objects.filter(score__gte=2).count())
    qs = Post.objects.filter(score__gte=2)
    qs.query.add_q(Q(score__lt=4))
    assert qs.count() == 2
    qs = Post.objects.filter(score__gte=2)
    qs.query.set_limits(0, 3)
    assert qs.count() == 3
    qs = Post.objects.filter(score__gte=2)
    qs.query.clear_where()
    assert qs.count() == 8
    fetched = Post.objects.filter(score__gte=2)
    fetched.query = Post.objects.filter(score__gte=7).query
    assert [p.score for p in fetched] == [7]


def test_edits_inside_the_query_are_seen(blog: dict[str, Any], queries: Any) -> None:
    """Edits of the objects a query holds (a condition's value, an ``__in`` list, a join's
    type, the ``select_related`` tree) keep the query's attributes, yet change its SQL. Each
    edited queryset is read first: a chain sealed by attributes alone would then give the
    plain chain, which looks the same to the memo, the edited one's answer."""

    def pks(qs: Any) -> list[int]:
        return [p.pk for p in qs]

    truth = pks(Post.objects.nocache().filter(score=2))
    edited = Post.objects.filter(score=2)
    edited.query.where.children[0].rhs = 3
    assert pks(edited) == pks(Post.objects.nocache().filter(score=3)) != truth
    assert pks(Post.objects.filter(score=2)) == truth

    edited = Post.objects.filter(score__in=[2])
    edited.query.where.children[0].rhs.append(3)
    assert pks(edited) == pks(Post.objects.nocache().filter(score__in=[2, 3])) != truth
    assert pks(Post.objects.filter(score__in=[2])) == truth

    outer = Post.objects.nocache().filter(author__name__isnull=True).count()
    edited = Post.objects.filter(author__name__isnull=True)
    edited.query.demote_joins(list(edited.query.alias_map))  # LEFT OUTER becomes INNER
    assert edited.count() != outer
    assert Post.objects.filter(author__name__isnull=True).count() == outer

    plain = [p.pk for p in Post.objects.nocache().select_related("category")]
    edited = Post.objects.select_related("category")
    edited.query.add_select_related(["author"])
    assert [p.pk for p in edited] == plain
    again = list(Post.objects.select_related("category"))
    assert [p.pk for p in again] == plain
    assert "author" not in again[0]._state.fields_cache, "the edited chain's rows came back"


def test_shapes_a_chain_cannot_describe_get_djangos_answer(
    blog: dict[str, Any], compiles: list[str]
) -> None:
    news = blog["news"]
    reads: list[Callable[[], Any]] = [
        lambda: Post.objects.filter(Q(score=1) | Q(score=2)).count(),
        lambda: Post.objects.filter(category=news).count(),  # an instance
        lambda: Post.objects.filter(score=F("id")).count(),
        lambda: Post.objects.filter(created__year=2024).count(),  # a transform
        lambda: Post.objects.filter(title__regex="^post [12]$").count(),
        lambda: list(Post.objects.filter(score=1).values_list("title", flat=True)),
        lambda: list(Author.objects.select_related("profile").filter(name="Ann")),  # reverse
        lambda: list(Post.objects.select_related("category").only("title", "category__title")),
        lambda: Post.objects.order_by("?").filter(score=1).count(),
    ]
    for read in reads:
        expected = uncached(read)
        for _ in range(3):
            compiles.clear()
            assert _plain(read()) == expected
            assert compiles, "expected the general (compiled) path"


def test_a_registered_lookup_replacing_exact_is_followed(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    served(queries, compiles, lambda: Post.objects.filter(title="POST 1").count())
    assert Post.objects.filter(title="POST 1").count() == 0

    class CaseInsensitive(Exact):
        def process_lhs(self, compiler: Any, connection: Any, lhs: Any = None) -> Any:
            sql, params = super().process_lhs(compiler, connection, lhs)
            return f"UPPER({sql})", params

    with register_lookup(CharField, CaseInsensitive, lookup_name="exact"):
        assert Post.objects.filter(title="POST 1").count() == 1
    assert Post.objects.filter(title="POST 1").count() == 0


def test_a_queryset_that_applies_filters_its_own_way_is_not_recorded() -> None:
    class Translating(QuerySet[Any]):
        def _filter_or_exclude(self, negate: bool, args: Any, kwargs: Any) -> Any:
            kwargs = {k.replace("name", "title"): v for k, v in kwargs.items()}
            return super()._filter_or_exclude(negate, args, kwargs)

    Category.objects.create(title="one", slug="one")
    qs = Translating(model=Category).filter(name="one")
    assert "_freshcache_chain" not in qs.__dict__
    assert qs.count() == qs.count() == 1
    assert "_freshcache_chain" in Category.objects.filter(title="one").__dict__


def test_models_that_are_never_cached_record_no_chain() -> None:
    from django.contrib.auth.models import Group as AuthGroup

    # auth.Group has no profile (tests/settings.py): its reads are never cached, so recording
    # its chains would only slow down every filter().
    qs = AuthGroup.objects.filter(name="x").order_by("name")[:3]
    assert "_freshcache_chain" not in qs.__dict__
    assert list(qs) == [] and qs.count() == 0
    assert "_freshcache_chain" in Category.objects.filter(title="x").order_by("id")[:3].__dict__
    # A queryset of no model (a placeholder some code builds) is Django's alone.
    bare = QuerySet().all()[:3]
    assert bare.model is None and bare.query.high_mark == 3


def test_reads_in_a_transaction_with_writes_see_them(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    def read() -> int:
        return Post.objects.filter(visible=True).count()

    served(queries, compiles, read)
    with transaction.atomic():
        Post.objects.filter(score=1).update(visible=False)
        assert read() == 7
    assert read() == 7


def test_options_and_the_hit_signal(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    hits: list[bool] = []

    def receiver(sender: Any, hit: bool, **kwargs: Any) -> None:
        hits.append(hit)

    served(queries, compiles, lambda: Post.objects.filter(score=1).count())
    cache_read.connect(receiver)
    try:
        Post.objects.filter(score=1).count()
        with queries() as q:
            Post.objects.nocache().filter(score=1).count()
            Post.objects.cache(ops=["fetch"]).filter(score=1).count()
    finally:
        cache_read.disconnect(receiver)
    assert hits == [True] and q.count == 2


def test_random_chains_name_the_compiled_statement(
    blog: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``verify`` on, each read of a known chain is also compiled and must give the key the
    chain named (an AssertionError otherwise), and the result must be the database's."""
    monkeypatch.setattr(chains, "verify", True)
    Tag.objects.create(name="t")
    rng = random.Random(7)
    filters: list[tuple[str, Callable[[], object]]] = [
        ("score", lambda: rng.randint(0, 8)),
        ("score__gt", lambda: rng.randint(0, 8)),
        ("score__in", lambda: [rng.randint(0, 8) for _ in range(rng.randint(1, 3))]),
        ("title__startswith", lambda: rng.choice(["post", "post 1", "x"])),
        ("title__iexact", lambda: rng.choice(["POST 2", "post 5"])),
        ("category__slug", lambda: rng.choice(["news", "misc"])),
        ("category_id", lambda: rng.choice([blog["news"].pk, blog["misc"].pk])),
        ("author__isnull", lambda: rng.choice([True, False])),
        ("author__name__contains", lambda: rng.choice(["An", "Bo"])),
        ("visible", lambda: rng.choice([True, False])),
        ("price__lte", lambda: rng.choice([3, 5.5, "4.25"])),
        ("pk__range", lambda: [rng.randint(0, 4), rng.randint(4, 9)]),
    ]
    orderings = ["id", "-score", "title", "category__slug", "-pk", "author__name"]

    related = [(), ("category",), ("author",), ("category", "author"), ("author", "category")]

    def chain() -> QuerySet[Post]:
        qs = Post.objects.all()
        if rng.random() < 0.4:
            qs = qs.select_related(*rng.choice(related))
        for _ in range(rng.randint(1, 3)):
            name, value = rng.choice(filters)
            qs = (
                qs.exclude(**{name: value()})
                if rng.random() < 0.3
                else qs.filter(**{name: value()})
            )
        qs = qs.order_by(*rng.sample(orderings, rng.randint(1, 2)), "id")
        if rng.random() < 0.5:
            start = rng.randint(0, 3)
            qs = qs[start : start + rng.randint(1, 4)]
        return qs

    for _ in range(60):
        state = rng.getstate()
        for op in ("fetch", "count", "exists"):
            for _ in range(3):
                rng.setstate(state)
                got = _read(chain(), op)
                rng.setstate(state)
                assert got == uncached(lambda: _read(chain(), op))  # noqa: B023
        Post.objects.filter(score=rng.randint(0, 8)).update(score=rng.randint(0, 8))


def _read(qs: QuerySet[Post], op: str) -> Any:
    if op == "fetch":
        return _plain(list(qs))
    return qs.count() if op == "count" else qs.exists()


def test_every_step_is_part_of_the_chain(
    blog: dict[str, Any], queries: Any, compiles: list[str]
) -> None:
    """Chains that differ in one step only (a slice, an order, exclude for filter, a lookup)
    must never be served each other's values."""
    variants: list[Callable[[], QuerySet[Post]]] = [
        lambda: Post.objects.order_by("id"),
        lambda: Post.objects.order_by("id")[0:2],
        lambda: Post.objects.order_by("id")[2:4],
        lambda: Post.objects.order_by("id")[2:],
        lambda: Post.objects.order_by("-id")[0:2],
        lambda: Post.objects.order_by("-score", "id")[0:2],
        lambda: Post.objects.filter(score=3),
        lambda: Post.objects.exclude(score=3),
        lambda: Post.objects.filter(score__gte=3),
        lambda: Post.objects.filter(score__gte=3).filter(score__lte=5),
        lambda: Post.objects.filter(score__gte=3).exclude(score__lte=5),
        lambda: Post.objects.filter(score__gte=3, score__lte=5),
        lambda: Post.objects.filter(title__startswith="post 1"),
        lambda: Post.objects.filter(title__endswith="post 1"),
        lambda: Post.objects.select_related("category").order_by("id"),
        lambda: Post.objects.select_related("author").order_by("id"),
        lambda: Post.objects.select_related().order_by("id"),
    ]
    for make in variants:
        for _ in range(3):
            assert _read(make(), "fetch") == uncached(lambda: _read(make(), "fetch"))  # noqa: B023
            assert make().count() == uncached(make().count)
