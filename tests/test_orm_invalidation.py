"""Every way of writing invalidates what it must, and only that.

Each test caches a read, writes, and reads again: without the invalidation under test the second
read would be served stale from the cache, so each would fail if that path were missing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.db.models import Value
from django.db.models.functions import Upper
from django.db.models.signals import post_migrate
from django.test import override_settings

from freshcache import invalidate_all, invalidate_model, invalidate_obj, no_invalidation
from freshcache.signals import cache_invalidated
from tests.testapp.models import (
    Author,
    Category,
    Comment,
    Group,
    Member,
    Membership,
    Note,
    Place,
    Post,
    Profile,
    Qualified,
    Restaurant,
    Tag,
    VisiblePost,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def c1() -> Category:
    return Category.objects.create(title="one", slug="one")


@pytest.fixture
def c2() -> Category:
    return Category.objects.create(title="two", slug="two")


def titles(**filters: Any) -> list[str]:
    return [p.title for p in Post.objects.filter(**filters)]


def cached(queries: Any, read: Any) -> Any:
    """Read, then check a second read is served from the cache; return the value."""
    value = read()
    with queries() as q:
        again = read()
    assert q.count == 0, "precondition: the read is cached"
    assert again == value
    return value


# -- save() and delete() --------------------------------------------------------------------------


def test_save_update(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    assert cached(queries, lambda: titles(category=c1)) == ["a"]
    p.title = "b"
    p.save()
    assert titles(category=c1) == ["b"]


def test_save_create(c1: Category, queries: Any) -> None:
    assert cached(queries, lambda: Post.objects.filter(category=c1).count()) == 0
    Post.objects.create(title="a", category=c1)
    assert Post.objects.filter(category=c1).count() == 1


def test_get_of_missing_row_then_create(c1: Category, queries: Any) -> None:
    def get() -> str | None:
        try:
            return Post.objects.get(pk=1000).title
        except Post.DoesNotExist:
            return None

    assert cached(queries, get) is None
    Post.objects.create(pk=1000, title="new", category=c1)
    assert get() == "new"


def test_save_moves_row_between_groups(c1: Category, c2: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    assert cached(queries, lambda: titles(category=c1)) == ["a"]
    assert cached(queries, lambda: titles(category=c2)) == []
    p.category = c2
    p.save()
    assert titles(category=c1) == []
    assert titles(category=c2) == ["a"]


def test_old_values_come_from_the_database(c1: Category, c2: Category, queries: Any) -> None:
    """The instance was loaded in category 1; another process moved the row to category 2."""
    c3 = Category.objects.create(title="three", slug="three")
    p = Post.objects.create(title="a", category=c1)
    stale_instance = Post.objects.get(pk=p.pk)
    with connection.cursor() as cursor:  # "another process", bypassing our instance
        cursor.execute("UPDATE testapp_post SET category_id = %s WHERE id = %s", [c2.pk, p.pk])
    assert cached(queries, lambda: titles(category=c2)) == ["a"]
    stale_instance.category = c3
    stale_instance.save()
    assert titles(category=c2) == []
    assert titles(category=c3) == ["a"]


def test_write_elsewhere_is_granular(c1: Category, c2: Category, queries: Any) -> None:
    Post.objects.create(title="a", category=c1)
    p2 = Post.objects.create(title="b", category=c2)
    cached(queries, lambda: titles(category=c1))
    p2.title = "bb"
    p2.save()
    with queries() as q:
        assert titles(category=c1) == ["a"]
    assert q.count == 0, "a write in category 2 must not invalidate category 1"


def test_delete_with_cascade(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    Comment.objects.create(post=p, text="x")
    assert cached(queries, lambda: Comment.objects.filter(post__category=c1).count()) == 1
    assert cached(queries, lambda: Comment.objects.count()) == 1
    c1.delete()
    assert Comment.objects.filter(post__category_id=c1.pk).count() == 0
    assert Comment.objects.count() == 0


def test_delete_set_null(c1: Category, queries: Any) -> None:
    ann = Author.objects.create(name="Ann")
    Post.objects.create(title="a", category=c1, author=ann)
    ann_pk = ann.pk
    assert cached(queries, lambda: titles(author__isnull=True)) == []
    assert cached(queries, lambda: titles(author=ann_pk)) == ["a"]
    ann.delete()
    assert titles(author__isnull=True) == ["a"]
    assert titles(author=ann_pk) == []


def test_instance_delete(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    pk = p.pk
    assert cached(queries, lambda: Post.objects.filter(pk=pk).exists()) is True
    p.delete()
    assert Post.objects.filter(pk=pk).exists() is False


# -- m2m, through models, one-to-one --------------------------------------------------------------


def test_m2m_add_remove_clear_set_both_sides(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    t1, t2 = Tag.objects.create(name="t1"), Tag.objects.create(name="t2")

    def tags() -> list[str]:
        return sorted(t.name for t in Post.objects.get(pk=p.pk).tags.all())

    def posts_of_t1() -> list[str]:
        return [x.title for x in Tag.objects.get(pk=t1.pk).posts.all()]

    assert cached(queries, tags) == []
    assert cached(queries, posts_of_t1) == []
    p.tags.add(t1, t2)
    assert tags() == ["t1", "t2"]
    assert posts_of_t1() == ["a"]
    cached(queries, tags)
    p.tags.remove(t2)
    assert tags() == ["t1"]
    cached(queries, tags)
    t1.posts.clear()
    assert tags() == []
    assert posts_of_t1() == []
    cached(queries, tags)
    p.tags.set([t2])
    assert tags() == ["t2"]


def test_explicit_through(queries: Any) -> None:
    ann = Author.objects.create(name="Ann")
    g = Group.objects.create(name="g")

    def members() -> list[str]:
        return [a.name for a in Group.objects.get(pk=g.pk).members.all()]

    assert cached(queries, members) == []
    m = Membership.objects.create(author=ann, group=g)
    assert members() == ["Ann"]
    cached(queries, members)
    m.delete()
    assert members() == []
    cached(queries, members)
    g.members.add(ann, through_defaults={"role": "admin"})
    assert members() == ["Ann"]


def test_reverse_one_to_one(queries: Any) -> None:
    ann = Author.objects.create(name="Ann")
    Profile.objects.create(author=ann, bio="old")
    assert cached(queries, lambda: Author.objects.get(pk=ann.pk).profile.bio) == "old"
    Profile.objects.filter(author=ann).update(bio="new")
    assert Author.objects.get(pk=ann.pk).profile.bio == "new"


# -- bulk and queryset writes ---------------------------------------------------------------------


def test_bulk_create(c1: Category, queries: Any) -> None:
    assert cached(queries, lambda: titles(category=c1)) == []
    Post.objects.bulk_create([Post(title="x", category=c1), Post(title="y", category=c1)])
    assert titles(category=c1) == ["x", "y"]


def test_bulk_create_ignoring_conflicts(queries: Any) -> None:
    """With ``ignore_conflicts`` the database returns no keys: the new row's stamps, named
    after a key only the database knows, must still go (they were named after ``None``)."""
    following = Author.objects.create(name="first").pk + 1

    def names() -> list[str]:
        return list(Author.objects.filter(pk=following).values_list("name", flat=True))

    assert cached(queries, names) == []
    Author.objects.bulk_create([Author(name="second")], ignore_conflicts=True)
    assert names() == ["second"]


def test_m2m_add_names_rows_only_the_database_keys(c1: Category, queries: Any) -> None:
    post, tag = Post.objects.create(title="p", category=c1), Tag.objects.create(name="t")
    through = Post.tags.through
    post.tags.add(Tag.objects.create(name="first"))
    following = through.objects.get(post=post).pk + 1
    assert cached(queries, lambda: through.objects.filter(pk=following).count()) == 0
    post.tags.add(tag)  # a bulk_create that ignores conflicts
    assert through.objects.filter(pk=following).count() == 1


@override_settings(USE_TZ=False, TIME_ZONE="America/New_York")
def test_a_naive_time_in_a_daylight_saving_gap(c1: Category, queries: Any) -> None:
    """Without time zone support PostgreSQL still stores instants: 02:30 on the night clocks
    jump from 02:00 to 03:00 is read as 03:30, so a filter on one matches a row saved with the
    other, and no stamp named after either value can stand for both."""
    import datetime as dt

    gap, after = dt.datetime(2024, 3, 10, 2, 30), dt.datetime(2024, 3, 10, 3, 30)

    def read() -> list[str]:
        return titles(created=gap)

    assert cached(queries, read) == []
    Post.objects.create(title="later", category=c1, created=after)
    expected = [p.title for p in Post.objects.nocache().filter(created=gap)]
    if connection.vendor == "postgresql":
        assert expected == ["later"]
    assert read() == expected


def test_bulk_update(c1: Category, c2: Category, queries: Any) -> None:
    a = Post.objects.create(title="a", category=c1)
    b = Post.objects.create(title="b", category=c1)
    assert cached(queries, lambda: titles(category=c2)) == []
    a.category, b.title = c2, "bb"
    Post.objects.bulk_update([a, b], ["category", "title"])
    assert titles(category=c2) == ["a"]
    assert titles(category=c1) == ["bb"]


def test_queryset_update(c1: Category, c2: Category, queries: Any) -> None:
    Post.objects.create(title="a", category=c1, score=1)
    assert cached(queries, lambda: titles(category=c2)) == []
    assert cached(queries, lambda: titles(score=1)) == ["a"]
    Post.objects.filter(title="a").update(category=c2, score=2)
    assert titles(category=c2) == ["a"]
    assert titles(score=1) == []


def test_queryset_update_with_expression(c1: Category, queries: Any) -> None:
    from django.db.models import F

    Post.objects.create(title="a", category=c1, score=1)
    assert cached(queries, lambda: titles(score=2)) == []
    Post.objects.filter(category=c1).update(score=F("score") + 1)
    assert titles(score=2) == ["a"]


def test_an_update_filtered_across_a_relation_racing_a_write_there(queries: Any) -> None:
    """The rows an ``UPDATE ... WHERE category.title = 'x'`` writes depend on category rows
    that locking the posts does not hold: a commit between the old values' read and the write
    can swap one matching post for another, with the same count. The post that came in must
    not stay cached."""
    from django.db.models import Case, When

    from tests.conftest import on_another_connection

    x1, x2, y = (Category.objects.create(title=t, slug=s) for t, s in ("xa", "xb", "yc"))
    Category.objects.filter(pk__in=[x1.pk, x2.pk]).update(title="x")
    Category.objects.filter(pk=y.pk).update(title="y")
    Post.objects.create(title="one", category=x1)
    Post.objects.create(title="two", category=x2)
    three = Post.objects.create(title="three", category=y)
    assert cached(queries, lambda: Post.objects.get(pk=three.pk).visible) is True

    def swap() -> int:  # x1 stops being "x", y becomes "x"
        return Category.objects.filter(pk__in=[x1.pk, y.pk]).update(
            title=Case(When(pk=x1.pk, then=Value("y")), default=Value("x"))
        )

    def before_the_update(execute: Any, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE") and Post._meta.db_table in sql.split("SET")[0]:
            on_another_connection(swap)
        return execute(sql, *args)

    with connection.execute_wrapper(before_the_update):
        assert Post.objects.filter(category__title="x").update(visible=False) == 2
    assert Post.objects.get(pk=three.pk).visible is False


def test_writes_to_every_row(c1: Category, queries: Any) -> None:
    """``Model.objects.update()`` and ``.all().delete()``: a query with no condition (and no
    table alias yet) once the table has a scheme."""
    post = Post.objects.create(title="p", category=c1)
    Comment.objects.create(post=post, text="a")

    def count(text: str) -> int:
        return Comment.objects.filter(text=text).count()

    assert cached(queries, lambda: count("b")) == 0
    assert Comment.objects.update(text="b") == 1
    assert count("b") == 1
    Comment.objects.all().delete()
    assert count("b") == 0


def test_which_conditions_read_other_rows(c1: Category) -> None:
    from django.db.models import Exists, F, OuterRef, Subquery

    from freshcache.writescope import reads_other_rows

    def reads(qs: Any) -> bool:
        return reads_other_rows(qs.query)

    assert not reads(Post.objects.filter(title="a", score__gt=F("score") - 1))
    assert not reads(Post.objects.filter(category=c1, pk__in=[1, 2]))
    assert not reads(Post.objects.filter(category_id=c1.pk))
    assert reads(Post.objects.filter(category__title="x"))
    assert reads(Post.objects.filter(pk__in=Category.objects.values("pk")))
    assert reads(Post.objects.filter(pk__in=Subquery(Category.objects.values("pk"))))
    assert reads(Post.objects.filter(Exists(Category.objects.filter(pk=OuterRef("category")))))
    assert reads(Post.objects.extra(where=["title = 'a'"]))


def test_queryset_update_over_the_granular_limit(c1: Category, queries: Any, settings: Any) -> None:
    settings.FRESHCACHE_GRANULAR_WRITE_LIMIT = 1
    Post.objects.bulk_create([Post(title=str(i), category=c1) for i in range(3)])
    assert cached(queries, lambda: titles(title="0")) == ["0"]
    Post.objects.filter(category=c1).update(title="z")
    assert titles(title="0") == []


def test_queryset_delete_fast_path(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    Comment.objects.create(post=p, text="x")
    assert cached(queries, lambda: Comment.objects.filter(post=p).count()) == 1
    Comment.objects.filter(text="x").delete()  # no signals, no cascades: a fast delete
    assert Comment.objects.filter(post=p).count() == 0


def test_update_or_create_and_get_or_create(c1: Category, queries: Any) -> None:
    assert cached(queries, lambda: titles(category=c1)) == []
    Post.objects.get_or_create(title="a", category=c1)
    assert titles(category=c1) == ["a"]
    cached(queries, lambda: titles(category=c1))
    Post.objects.update_or_create(title="a", defaults={"title": "b"})
    assert titles(category=c1) == ["b"]


def test_invalidated_update(c1: Category, c2: Category, queries: Any, settings: Any) -> None:
    settings.FRESHCACHE_GRANULAR_WRITE_LIMIT = 0
    Post.objects.create(title="a", category=c1)
    Post.objects.create(title="b", category=c2)
    assert cached(queries, lambda: titles(category=c1)) == ["a"]
    assert cached(queries, lambda: titles(category=c2)) == ["b"]
    assert Post.objects.filter(category=c1).invalidated_update(category=c2) == 1
    assert titles(category=c1) == []
    assert titles(category=c2) == ["a", "b"]


# -- raw SQL and migrations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE testapp_post SET title = 'raw'",
        "DELETE FROM testapp_post",
        "INSERT INTO testapp_post (title, category_id, visible, score) "
        "SELECT 'raw', category_id, visible, score FROM testapp_post",
    ],
)
def test_raw_cursor_writes(c1: Category, queries: Any, sql: str) -> None:
    Post.objects.create(title="a", category=c1)
    before = cached(queries, lambda: titles(category=c1))
    with connection.cursor() as cursor:
        cursor.execute(sql)
    assert titles(category=c1) != before


def test_raw_write_to_unknown_tables_invalidates_everything(c1: Category, queries: Any) -> None:
    Post.objects.create(title="a", category=c1)
    cached(queries, lambda: titles(category=c1))
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH doomed AS (SELECT id FROM testapp_post) "
            "DELETE FROM testapp_post WHERE id IN (SELECT id FROM doomed)"
        )
    assert titles(category=c1) == []


def test_post_migrate_invalidates_the_app(c1: Category, queries: Any) -> None:
    Post.objects.create(title="a", category=c1)
    cached(queries, lambda: titles(category=c1))
    config = apps.get_app_config("testapp")
    post_migrate.send(
        sender=config,
        app_config=config,
        using="default",
        verbosity=0,
        interactive=False,
        apps=apps,
        plan=[],
    )
    with queries() as q:
        titles(category=c1)
    assert q.count == 1


# -- families -------------------------------------------------------------------------------------


def test_proxy_shares_invalidation(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    assert cached(queries, lambda: [x.title for x in VisiblePost.objects.all()]) == ["a"]
    p.title = "b"
    p.save()
    assert [x.title for x in VisiblePost.objects.all()] == ["b"]
    vp = VisiblePost.objects.get(pk=p.pk)
    cached(queries, lambda: titles(pk=p.pk))
    vp.title = "c"
    vp.save()
    assert titles(pk=p.pk) == ["c"]


def test_multi_table_inheritance(queries: Any) -> None:
    r = Restaurant.objects.create(name="Luigi", city="Rome")
    assert cached(queries, lambda: [p.name for p in Place.objects.filter(city="Rome")]) == ["Luigi"]
    assert cached(queries, lambda: Restaurant.objects.get(pk=r.pk).name) == "Luigi"
    r.name = "Mario"
    r.serves_pizza = True
    r.save()
    assert [p.name for p in Place.objects.filter(city="Rome")] == ["Mario"]
    assert Restaurant.objects.get(pk=r.pk).name == "Mario"
    cached(queries, lambda: Restaurant.objects.filter(serves_pizza=True).count())
    Place.objects.filter(pk=r.pk).delete()
    assert Restaurant.objects.filter(serves_pizza=True).count() == 0


# -- the API --------------------------------------------------------------------------------------


def test_invalidate_obj_model_all(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    with no_invalidation:
        p.title = "b"
        p.save()
    assert titles(category=c1) == ["b"]  # not cached before the write: fresh from the DB
    cached(queries, lambda: titles(category=c1))
    with no_invalidation:
        Post.objects.filter(pk=p.pk).update(title="c")
    assert titles(category=c1) == ["b"], "no_invalidation really suspended invalidation"
    invalidate_obj(Post.objects.nocache().get(pk=p.pk))
    assert titles(category=c1) == ["c"]
    with no_invalidation:
        Post.objects.filter(pk=p.pk).update(title="d")
    invalidate_model(Post)
    assert titles(category=c1) == ["d"]
    with no_invalidation:
        Post.objects.filter(pk=p.pk).update(title="e")
    invalidate_all()
    assert titles(category=c1) == ["e"]


def test_no_invalidation_as_decorator(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    cached(queries, lambda: titles(category=c1))

    @no_invalidation
    def batch() -> None:
        Post.objects.filter(pk=p.pk).update(title="b")

    batch()
    assert titles(category=c1) == ["a"]
    Post.objects.filter(pk=p.pk).update(title="c")  # back to normal after the decorator
    assert titles(category=c1) == ["c"]


def test_invalidate_all_leaves_foreign_keys_alone(c1: Category) -> None:
    from freshcache.backends import get_backend

    backend = get_backend()
    backend.set_many({"someone-else:key": b"mine"}, 60)
    invalidate_all()
    assert backend.get_many(["someone-else:key"]) == [b"mine"]


def test_management_command(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    for target in ["all", "testapp", "testapp.Post", f"testapp.Post.{p.pk}"]:
        cached(queries, lambda: titles(category=c1))
        with no_invalidation:
            Post.objects.filter(pk=p.pk).update(title=target)
        call_command("invalidate", target)
        assert titles(category=c1) == [target]


def test_cache_invalidated_signal(c1: Category) -> None:
    seen: list[str] = []

    def receiver(sender: Any, table: str, **kwargs: Any) -> None:
        seen.append(table)

    cache_invalidated.connect(receiver)
    try:
        Post.objects.create(title="a", category=c1)
    finally:
        cache_invalidated.disconnect(receiver)
    assert "testapp_post" in seen


# -- tables reached indirectly ------------------------------------------------------------------


def test_tables_reached_indirectly_are_tracked(c1: Category, c2: Category, queries: Any) -> None:
    """Subqueries, Exists, Subquery annotations, select_related, prefetches, aggregates over
    relations, FK access, counts of sliced/distinct querysets: a write to any table read
    invalidates the result."""
    from django.db.models import Count, Exists, OuterRef, Subquery

    p = Post.objects.create(title="a", category=c1, score=1)
    Comment.objects.create(post=p, text="hi")
    reads = {
        "in-subquery": lambda: titles(category__in=Category.objects.filter(title="one")),
        "exists": lambda: [
            x.title
            for x in Post.objects.filter(
                Exists(Comment.objects.filter(post=OuterRef("pk"), text="hi"))
            )
        ],
        "subquery-annotation": lambda: [
            x.last_comment
            for x in Post.objects.annotate(
                last_comment=Subquery(
                    Comment.objects.filter(post=OuterRef("pk")).order_by("-id").values("text")[:1]
                )
            )
        ],
        "select-related": lambda: [
            x.category.title for x in Post.objects.select_related("category")
        ],
        "prefetch": lambda: [
            [c.text for c in x.comments.all()] for x in Post.objects.prefetch_related("comments")
        ],
        "count-relation": lambda: [
            (x.title, x.n) for x in Category.objects.annotate(n=Count("posts")).order_by("id")
        ],
        "fk-access": lambda: Post.objects.get(pk=p.pk).category.title,
        "sliced-count": lambda: Post.objects.all()[:5].count(),
        "distinct-count": lambda: Post.objects.values("category").distinct().count(),
        "grouped": lambda: list(
            Post.objects.values("category").annotate(n=Count("id")).order_by("category")
        ),
    }
    writes = [
        lambda: Category.objects.filter(pk=c1.pk).update(title="ONE"),
        lambda: Comment.objects.filter(post=p).update(text="bye"),
        lambda: Comment.objects.create(post=p, text="hi"),
        lambda: Post.objects.create(title="b", category=c2),
        lambda: Post.objects.filter(pk=p.pk).update(category=c2),
        lambda: Category.objects.filter(pk=c2.pk).update(title="TWO"),
    ]
    for write in writes:
        before = {name: cached(queries, read) for name, read in reads.items()}
        write()
        for name, read in reads.items():
            with queries() as q:
                value = read()
            with override_settings(FRESHCACHE_ENABLED=False):
                truth = read()
            assert value == truth, f"{name} is stale after the write"
            if truth != before[name]:
                assert q.count > 0


def test_writes_while_disabled_are_invalidated_on_reenable(c1: Category, queries: Any) -> None:
    p = Post.objects.create(title="a", category=c1)
    cached(queries, lambda: titles(category=c1))
    with override_settings(FRESHCACHE_ENABLED=False):
        Post.objects.filter(pk=p.pk).update(title="b")
        p.title = "c"
        p.save()
        with connection.cursor() as cursor:
            cursor.execute("UPDATE testapp_post SET title = 'd'")
    assert titles(category=c1) == ["d"]


def test_invalidate_all_fires_the_signal(c1: Category) -> None:
    seen: list[str] = []

    def receiver(sender: Any, table: str, **kwargs: Any) -> None:
        seen.append(table)

    cache_invalidated.connect(receiver)
    try:
        invalidate_all()
    finally:
        cache_invalidated.disconnect(receiver)
    assert seen == ["*"]


def test_user_callbacks_never_leak_when_invalidation_fails(c1: Category) -> None:
    """Without degrade, a failing backend raises at commit, after the user's callbacks ran."""
    from django.db import transaction

    from freshcache.exceptions import BackendError
    from freshcache.store import store

    ran: list[str] = []
    real_invalidate = store.invalidate

    def broken(*args: Any, **kwargs: Any) -> None:
        raise BackendError("down")

    store.invalidate = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(BackendError), transaction.atomic():
            transaction.on_commit(lambda: ran.append("first"))
            Post.objects.create(title="a", category=c1)
    finally:
        store.invalidate = real_invalidate  # type: ignore[method-assign]
    assert ran == ["first"]
    with transaction.atomic():
        Post.objects.create(title="b", category=c1)
    assert ran == ["first"], "the callback did not run a second time at the next commit"


def test_an_insert_of_sql_values_reaches_reads_of_their_columns(queries: Any) -> None:
    """A value Django sends as SQL (``Upper(...)``) is known only to the database: without the
    whole-table invalidation it falls back to, the cached count would stay 0."""
    cached(queries, lambda: Category.objects.filter(title="ADA").count())
    cached(queries, lambda: Category.objects.filter(slug="ada").count())
    Category.objects.create(title=Upper(Value("ada")), slug="ada")
    assert Category.objects.filter(title="ADA").count() == 1
    assert Category.objects.filter(slug="ada").count() == 1
    Category.objects.bulk_create([Category(title=Upper(Value("ada")), slug="ada2")])
    assert Category.objects.filter(title="ADA").count() == 2


def test_a_field_whose_pre_save_differs_from_its_attribute(queries: Any) -> None:
    """An INSERT sends ``pre_save()``'s value, not the attribute's: a subclass of a Django field
    that overrides it makes no atoms, so the reads below depend on the table as a whole."""
    cached(queries, lambda: list(Member.objects.filter(handle="alice").values_list("level")))
    cached(queries, lambda: Member.objects.filter(handle="bob").count())
    Member.objects.create(handle="  Alice ")
    assert list(Member.objects.filter(handle="alice").values_list("level")) == [(0,)]
    Member.objects.bulk_create([Member(handle="BOB")])
    assert Member.objects.filter(handle="bob").count() == 1


@pytest.mark.parametrize(
    "statement",
    [
        'UPDATE "public"."testapp_qualified" SET text = %s',
        "UPDATE public.testapp_qualified SET text = %s",
        "UPDATE testapp_qualified SET text = %s",
        'DELETE FROM "testapp_qualified" WHERE text <> %s',
        "TRUNCATE testapp_qualified",
    ],
)
def test_raw_sql_on_a_table_whose_model_names_its_schema(queries: Any, statement: str) -> None:
    """The model's db_table is '"public"."testapp_qualified"' (on PostgreSQL): a statement
    naming the table with or without its schema reaches its stamps."""
    Qualified.objects.nocache().all().delete()  # not flushed between tests (see the model)
    try:
        Qualified.objects.create(text="a")
        read = lambda: list(Qualified.objects.values_list("text", flat=True))  # noqa: E731
        cached(queries, read)
        if connection.vendor != "postgresql":  # no schemas, no TRUNCATE: the same, plainly
            statement = statement.replace('"public".', "").replace("public.", "")
            statement = statement.replace("TRUNCATE", "DELETE FROM")
        with connection.cursor() as cursor:
            cursor.execute(statement, ["v"] if "%s" in statement else None)
        assert read() == list(Qualified.objects.nocache().values_list("text", flat=True))
        assert read() != ["a"]
    finally:
        Qualified.objects.nocache().all().delete()


def test_raw_sql_naming_a_table_in_another_case(queries: Any) -> None:
    """SQLite matches table names whatever their case, quoted or not; PostgreSQL folds unquoted
    names to lower case, so there only the exact quoted name reaches ``"TestApp_Note"``."""
    note = Note.objects.create(text="a")
    read = lambda: list(Note.objects.values_list("text", flat=True))  # noqa: E731
    spellings = (
        ["UPDATE testapp_note SET text = %s", 'UPDATE "TESTAPP_NOTE" SET text = %s']
        if connection.vendor == "sqlite"
        else ['UPDATE "TestApp_Note" SET text = %s']
    )
    for i, statement in enumerate(spellings):
        cached(queries, read)
        with connection.cursor() as cursor:
            cursor.execute(f"{statement} WHERE id = %s", [f"v{i}", note.pk])
        assert read() == [f"v{i}"], statement
