"""ORM reads: what is cached, how it is keyed, and that hits equal the database's answer."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, models
from django.db.models import Count, Max, Sum
from django.db.models.expressions import RawSQL
from django.test import Client, override_settings

from freshcache.signals import cache_read
from tests.depsapp import models as deps_models
from tests.testapp.models import Author, Category, Comment, Post, Restaurant, Tag, VisiblePost

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def data() -> dict[str, Any]:
    c1 = Category.objects.create(title="one", slug="one")
    c2 = Category.objects.create(title="two", slug="two")
    ann = Author.objects.create(name="Ann")
    t1, t2 = Tag.objects.create(name="t1"), Tag.objects.create(name="t2")
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
    p1 = Post.objects.create(
        title="a", category=c1, author=ann, score=3, price=Decimal("1.50"), created=when
    )
    p2 = Post.objects.create(title="b", category=c1, score=5)
    p3 = Post.objects.create(title="c", category=c2, visible=False)
    p1.tags.set([t1, t2])
    Comment.objects.create(post=p1, text="hi")
    return {"c1": c1, "c2": c2, "ann": ann, "p1": p1, "p2": p2, "p3": p3, "t1": t1}


def twice(queries: Any, read: Any) -> tuple[Any, Any]:
    """Run ``read`` twice; the second run must not touch the database."""
    first = read()
    with queries() as q:
        second = read()
    assert q.count == 0, q.context.captured_queries
    return first, second


def test_get_is_cached(data: dict[str, Any], queries: Any) -> None:
    a, b = twice(queries, lambda: Post.objects.get(pk=data["p1"].pk))
    assert a == b
    assert (b.title, b.price, b.created) == ("a", Decimal("1.50"), data["p1"].created)
    assert type(b.price) is Decimal


@pytest.mark.parametrize(
    "read",
    [
        lambda: list(Post.objects.filter(category__slug="one")),
        lambda: list(Post.objects.filter(visible=True).values("title", "score")),
        lambda: list(Post.objects.values_list("title", flat=True)),
        lambda: Post.objects.in_bulk([1, 2]),
        lambda: Post.objects.filter(score__gt=1).count(),
        lambda: Post.objects.filter(title="a").exists(),
        lambda: Post.objects.aggregate(s=Sum("score"), m=Max("created")),
        lambda: Post.objects.order_by("-score").first(),
        lambda: Post.objects.last(),
        lambda: list(Post.objects.select_related("category", "author")),
        lambda: list(Category.objects.annotate(n=Count("posts")).order_by("n", "id")),
        lambda: list(Post.objects.only("title")),
        lambda: list(Post.objects.defer("title").filter(pk__in=[1, 3])),
        lambda: list(Post.objects.filter(tags__name="t1")),
        lambda: list(Post.objects.all()[1:2]),
        lambda: list(VisiblePost.objects.all()),
        lambda: sorted(
            p.pk for p in Post.objects.order_by().union(Post.objects.filter(pk=1).order_by())
        ),
    ],
)
def test_reads_are_cached_and_equal(data: dict[str, Any], queries: Any, read: Any) -> None:
    first, second = twice(queries, read)
    assert repr(first) == repr(second)
    if isinstance(first, list) and first and hasattr(first[0], "__dict__"):
        for x, y in zip(first, second, strict=True):
            assert {k: v for k, v in x.__dict__.items() if k != "_state"} == {
                k: v for k, v in y.__dict__.items() if k != "_state"
            }


def test_select_related_objects_come_back(data: dict[str, Any], queries: Any) -> None:
    _, posts = twice(queries, lambda: list(Post.objects.select_related("category", "author")))
    with queries() as q:
        assert posts[0].category.title == "one"
        assert posts[0].author.name == "Ann"
    assert q.count == 0


def test_foreign_key_reverse_and_m2m_access(data: dict[str, Any], queries: Any) -> None:
    pk = data["p1"].pk
    twice(queries, lambda: Post.objects.get(pk=pk).category.title)
    twice(queries, lambda: list(data["c1"].posts.all()))
    twice(queries, lambda: list(Post.objects.get(pk=pk).tags.all()))
    twice(queries, lambda: list(data["t1"].posts.all()))


def test_prefetch_related_queries_are_cached(data: dict[str, Any], queries: Any) -> None:
    def read() -> list[tuple[str, list[str], list[str]]]:
        return [
            (p.title, [t.name for t in p.tags.all()], [c.text for c in p.comments.all()])
            for p in Post.objects.prefetch_related("tags", "comments")
        ]

    first, second = twice(queries, read)
    assert first == second


def test_iterator_and_select_for_update_are_not_cached(data: dict[str, Any], queries: Any) -> None:
    list(Post.objects.iterator())
    with queries() as q:
        list(Post.objects.iterator())
    assert q.count == 1
    from django.db import transaction

    with transaction.atomic():
        list(Post.objects.select_for_update().filter(pk=1))
        with queries() as q:
            list(Post.objects.select_for_update().filter(pk=1))
        assert q.count == 1


def test_manual_cache_on_a_model_with_no_ops(queries: Any) -> None:
    item = deps_models.Category.objects.create(name="x")
    list(deps_models.Category.objects.all())
    with queries() as q:
        list(deps_models.Category.objects.all())
    assert q.count == 1  # profile has no ops: not cached automatically
    qs = deps_models.Category.objects.cache()
    twice(queries, lambda: list(qs.filter(pk=item.pk)))
    # Options survive chaining, and the chained queryset stays lazy and filterable.
    chained = deps_models.Category.objects.cache().filter(name="x")
    twice(queries, lambda: list(chained.filter(pk=item.pk)))


def test_cache_ops_subset_and_nocache(data: dict[str, Any], queries: Any) -> None:
    qs = Post.objects.filter(category=data["c1"]).cache(ops=["count"])
    twice(queries, qs.count)
    list(qs)
    with queries() as q:
        list(qs.all())
    assert q.count == 1  # fetch is not among the ops
    no = Post.objects.filter(visible=True).nocache()
    list(no)
    with queries() as q:
        list(no.filter(score=5))
        list(no.all())
    assert q.count == 2
    off = Post.objects.cache(ops=[])
    list(off)
    with queries() as q:
        list(off.all())
    assert q.count == 1


def test_per_queryset_timeout_is_used(data: dict[str, Any]) -> None:
    from freshcache.backends import get_backend
    from freshcache.backends.redis import RedisBackend

    backend = get_backend()
    backend.client.flushdb() if isinstance(backend, RedisBackend) else backend.clear()  # type: ignore[attr-defined]
    list(Post.objects.filter(score=5).cache(timeout=7))
    if isinstance(backend, RedisBackend):
        ttls = [backend.client.ttl(k) for k in backend.client.keys("fc:q:*")]
        assert ttls and all(0 < t <= 7 for t in ttls)
    else:
        import time

        now = time.monotonic()
        expiries = [e - now for k, (_, e) in backend._data.items() if k.startswith("fc:q:")]  # type: ignore[attr-defined]
        assert expiries and all(0 < e <= 7 for e in expiries)


def test_forbidden_profile_blocks_even_manual_cache(data: dict[str, Any], queries: Any) -> None:
    with override_settings(FRESHCACHE={"testapp.*": None}):
        qs = Post.objects.cache()
        list(qs)
        with queries() as q:
            list(qs.all())
        assert q.count == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: Post.objects.extra(where=["score > 1"]),
        lambda: Post.objects.annotate(x=RawSQL("score * 2", ())),
        lambda: Post.objects.order_by("?"),
    ],
)
def test_uncacheable_queries_always_hit_the_database(
    data: dict[str, Any], queries: Any, make: Any
) -> None:
    list(make())
    with queries() as q:
        list(make())
    assert q.count == 1


def test_empty_in_is_fine(data: dict[str, Any], queries: Any) -> None:
    with queries() as q:
        assert list(Post.objects.filter(pk__in=[])) == []
    assert q.count == 0


def test_cache_read_signal(data: dict[str, Any]) -> None:
    seen: list[tuple[Any, bool]] = []

    def receiver(sender: Any, func: Any, hit: bool, **kwargs: Any) -> None:
        seen.append((sender, hit))

    cache_read.connect(receiver)
    try:
        Post.objects.get(pk=data["p2"].pk)
        Post.objects.get(pk=data["p2"].pk)
        assert list(Post.objects.filter(pk__in=[])) == []  # no query at all: a miss, as in cacheops
        assert list(Post.objects.nocache().filter(pk__in=[])) == []  # not a cached read
    finally:
        cache_read.disconnect(receiver)
    assert seen == [(Post, False), (Post, True), (Post, False)]


def test_request_user_is_cached(queries: Any) -> None:
    User.objects.create_user("bob", password="pw")
    client = Client()
    assert client.login(username="bob", password="pw")
    assert client.get("/whoami/").content == b"bob"
    with queries() as q:
        assert client.get("/whoami/").content == b"bob"
    user_queries = [c["sql"] for c in q.context.captured_queries if "auth_user" in c["sql"]]
    assert user_queries == []


def test_admin_querysets_are_not_cached(data: dict[str, Any]) -> None:
    from django.contrib import admin

    model_admin = admin.site._registry[Post]
    qs = model_admin.get_queryset(None)
    from freshcache.queryset import options_of

    options = options_of(qs)
    assert options is not None and options.ops == frozenset()


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_db_agnostic_false_keys_by_alias(data: dict[str, Any], queries: Any) -> None:
    with override_settings(
        FRESHCACHE={"testapp.*": {"ops": "all", "timeout": 60, "db_agnostic": False}}
    ):
        assert Post.objects.filter(title="a").count() == 1
        assert Post.objects.using("other").filter(title="a").count() == 0


def test_multi_table_inheritance_reads(queries: Any) -> None:
    r = Restaurant.objects.create(name="Luigi", serves_pizza=True)
    _, got = twice(queries, lambda: Restaurant.objects.get(pk=r.pk))
    assert (got.name, got.serves_pizza) == ("Luigi", True)


def test_sql_compiled_once_on_a_miss(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    klass = connection.ops.compiler("SQLCompiler")
    calls: list[int] = []
    original = klass.as_sql

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        if type(self) is klass and not args and not kwargs:
            calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(klass, "as_sql", counting)
    list(Post.objects.filter(score=12345))
    assert len(calls) == 1


@pytest.mark.parametrize("damage", [lambda d: b"\x00garbage", lambda d: d[: len(d) // 2]])
def test_damaged_rows_payload_is_a_logged_miss(
    data: dict[str, Any], queries: Any, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    """Valid stamps around rows that do not decode: the database answers, a warning is logged."""
    import msgpack

    from freshcache.backends import get_backend
    from freshcache.backends.redis import RedisBackend

    backend = get_backend()
    if isinstance(backend, RedisBackend):
        backend.client.flushdb()
    else:
        backend.clear()  # type: ignore[attr-defined]
    expected = [p.title for p in Post.objects.filter(score=5)]
    keys = (
        [k.decode() for k in backend.client.keys("fc:q:*")]
        if isinstance(backend, RedisBackend)
        else [k for k in backend._data if k.startswith("fc:q:")]  # type: ignore[attr-defined]
    )
    assert len(keys) == 1
    tokens, rows = msgpack.unpackb(backend.get_many(keys)[0])
    backend.set_many({keys[0]: msgpack.packb([tokens, damage(rows)])}, 60)
    with caplog.at_level("WARNING", logger="freshcache"), queries() as q:
        assert [p.title for p in Post.objects.filter(score=5)] == expected
    assert q.count == 1
    assert "rejected" in caplog.text


class _Masked(str):
    """A string that hides its value in ``repr`` (as types for secrets or personal data do)."""

    def __repr__(self) -> str:
        return "'***'"


class _Colour(models.TextChoices):
    RED = "r", "Red"
    BLUE = "b", "Blue"


@pytest.mark.parametrize(
    "spell", [_Masked, lambda v: _Colour("r" if v == "a" else "b")], ids=["repr", "choices"]
)
def test_parameters_of_str_subclasses_are_keyed_by_their_content(queries: Any, spell: Any) -> None:
    """The driver sends a ``str`` subclass's content; its own ``repr`` may not show it
    (``TextChoices`` shows the member's name), so keys are built from ``str``'s ``repr``."""
    a = Category.objects.create(title=str(spell("a")), slug="a")
    b = Category.objects.create(title=str(spell("b")), slug="b")

    def read(value: str) -> list[int]:
        return [c.pk for c in Category.objects.filter(title=spell(value)).order_by("pk")]

    assert read("a") == [a.pk]
    with queries() as q:
        assert read("a") == [a.pk]
    assert q.count == 0, "precondition: the read is cached"
    assert read("b") == [b.pk]
