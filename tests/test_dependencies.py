"""Tests for ``freshcache.dependencies``: exact dependencies per query shape, the uncacheable
rules, value normalization and stamp keys, and a soundness check against a real database.

Run alone (no caching app, so nothing intercepts the reads the soundness check compares)::

    pytest tests/test_dependencies.py --ds=tests.deps_settings
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import django
import pytest
from django.apps import apps
from django.core.exceptions import EmptyResultSet, ObjectDoesNotExist
from django.db import IntegrityError, NotSupportedError, connections, transaction
from django.db.models import (
    Count,
    Exists,
    F,
    FilteredRelation,
    Func,
    IntegerField,
    Lookup,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Lower, Now, Random
from django.db.models.lookups import Exact
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import override_settings

from freshcache import dependencies
from freshcache.dependencies import (
    Deps,
    instance_dependencies,
    merge,
    model_dependencies,
    query_dependencies,
)
from freshcache.exceptions import UncacheableQuery
from freshcache.stamps import (
    UNKNOWN,
    normalize,
    row_conj_values,
    row_stamp_keys,
    scheme,
    stamp_key,
)
from tests.depsapp.models import (
    Author,
    Category,
    Comment,
    Document,
    Folder,
    Group,
    LegacyItem,
    Membership,
    Nocase,
    Node,
    Person,
    Place,
    Post,
    ProxyPost,
    ProxyRestaurant,
    Restaurant,
    Sample,
    Tag,
)

ALL = frozenset({()})
POST, CAT, AUTHOR, TAG, POST_TAGS = (
    "depsapp_post",
    "depsapp_category",
    "depsapp_author",
    "depsapp_tag",
    "depsapp_post_tags",
)
COMMENT, NODE, PLACE, REST = (
    "depsapp_comment",
    "depsapp_node",
    "depsapp_place",
    "depsapp_restaurant",
)


def deps(qs: Any, **kwargs: Any) -> Deps:
    """The walker's answer, checked to be the same once Django has compiled the query: the read
    path walks compiled queries (it remembers plans by their SQL)."""
    before = query_dependencies(qs.query, **kwargs)
    try:
        qs.query.get_compiler(qs.db).as_sql()
    except (EmptyResultSet, NotSupportedError, ObjectDoesNotExist):
        return before  # no SQL to send: nothing is walked after it
    assert query_dependencies(qs.query, **kwargs) == before
    return before


def select_all(qs: Any) -> Any:
    """``qs.select_related()`` without the deprecation warning Django 6.1 gives it."""
    qs = qs.all()
    qs.query.select_related = True
    return qs


def conjs(*items: dict[str, Any]) -> frozenset[tuple[tuple[str, Any], ...]]:
    return frozenset(tuple(sorted(d.items())) for d in items)


# -- the WHERE clause as a DNF --------------------------------------------------------------------


def test_pk_and_plain_equalities() -> None:
    assert deps(Post.objects.filter(pk=1)) == {POST: conjs({"id": 1})}
    assert deps(Post.objects.all()) == {POST: ALL}
    assert deps(Post.objects.filter(published=True, score=5, title="t")) == {
        POST: conjs({"published": True, "score": 5, "title": "t"})
    }


def test_non_equality_lookups_are_dropped() -> None:
    assert deps(Post.objects.filter(score__gt=3, title__startswith="a", category=2)) == {
        POST: conjs({"category_id": 2})
    }
    assert deps(Post.objects.filter(title__iexact="a")) == {POST: ALL}
    assert deps(Post.objects.annotate(low=Lower("title")).filter(low="a")) == {POST: ALL}


def test_in_is_one_disjunct_per_value() -> None:
    assert deps(Post.objects.filter(pk__in=[1, 2, 2, None], published=False)) == {
        POST: conjs({"id": 1, "published": False}, {"id": 2, "published": False})
    }


def test_in_over_max_in_is_dropped() -> None:
    assert deps(Post.objects.filter(pk__in=[1, 2, 3]), max_in=2) == {POST: ALL}
    assert deps(Post.objects.filter(pk__in=range(200), score=1)) == {POST: conjs({"score": 1})}


def test_or_and_products_and_max_conjs() -> None:
    qs = Post.objects.filter(Q(score=1) | Q(score=2), Q(published=True) | Q(title="x"))
    assert deps(qs) == {
        POST: conjs(
            {"score": 1, "published": True},
            {"score": 1, "title": "x"},
            {"score": 2, "published": True},
            {"score": 2, "title": "x"},
        )
    }
    # Past max_conjs a node keeps what all its disjuncts share (category_id=7 here).
    qs = Post.objects.filter(category=7, pk__in=[1, 2, 3], score__in=[4, 5])
    assert deps(qs, max_conjs=4) == {POST: conjs({"category_id": 7})}
    # An OR with a dropped (always-true) branch is true: table-wide.
    assert deps(Post.objects.filter(Q(score=1) | Q(score__gt=5))) == {POST: ALL}


def test_xor_counts_as_or() -> None:
    assert deps(Post.objects.filter(Q(score=1) ^ Q(published=True))) == {
        POST: conjs({"score": 1}, {"published": True})
    }


def test_negation_is_dropped() -> None:
    assert deps(Post.objects.exclude(score=1)) == {POST: ALL}
    assert deps(Post.objects.filter(~Q(score=1), published=True)) == {
        POST: conjs({"published": True})
    }


def test_contradictions_and_nothing_read_no_rows() -> None:
    assert deps(Post.objects.filter(score=1).filter(score=2)) == {}
    assert deps(Post.objects.none()) == {}
    assert deps(Post.objects.filter(pk__in=[])) == {}
    assert deps(Post.objects.filter(Q(pk__in=[]) | Q(score=3))) == {POST: conjs({"score": 3})}
    # a subquery in the select list still counts when the WHERE is always false
    sub = Subquery(Comment.objects.filter(text="x").values("id")[:1])
    assert deps(Post.objects.filter(pk__in=[]).annotate(c=sub)) == {COMMENT: conjs({"text": "x"})}


def test_isnull() -> None:
    assert deps(Post.objects.filter(author__isnull=True)) == {POST: conjs({"author_id": None})}
    assert deps(Post.objects.filter(author=None)) == {POST: conjs({"author_id": None})}
    assert deps(Post.objects.filter(created__isnull=False)) == {POST: ALL}


def test_isnull_on_a_left_outer_join_is_dropped() -> None:
    # A missing author row is what makes author.name IS NULL true.
    assert deps(Post.objects.filter(author__name__isnull=True)) == {POST: ALL, AUTHOR: ALL}
    assert deps(Category.objects.filter(post__isnull=True)) == {CAT: ALL, POST: ALL}


def test_foreign_keys_by_value_and_by_instance() -> None:
    category = Category(pk=4, name="c", slug="c")
    assert deps(Post.objects.filter(category=category)) == {POST: conjs({"category_id": 4})}
    assert deps(Post.objects.filter(category_id="4")) == {POST: conjs({"category_id": 4})}
    assert deps(Post.objects.filter(category__in=[category, 5])) == {
        POST: conjs({"category_id": 4}, {"category_id": 5})
    }
    # the join is trimmed: category.id = 4 is post.category_id = 4
    assert deps(Post.objects.filter(category__id=4)) == {POST: conjs({"category_id": 4})}


def test_rhs_is_prepped_like_the_write_side() -> None:
    # a lookup built from an expression is not prepped by Django; 1 must become True
    lookup = Exact(F("published"), 1)
    assert deps(Post.objects.filter(lookup)) == {POST: ALL}  # Value(1) rhs: an expression
    assert deps(Post.objects.filter(published=1)) == {POST: conjs({"published": True})}
    assert deps(Post.objects.filter(score="7")) == {POST: conjs({"score": 7})}


def test_choices_decimals_datetimes() -> None:
    qs = Post.objects.filter(status=Post.Status.LIVE, rank=Post.Rank.HIGH)
    ((conj,),) = [tuple(deps(qs)[POST])]
    assert conj == (("rank", 2), ("status", "live"))
    assert type(conj[0][1]) is int and type(conj[1][1]) is str
    assert deps(Post.objects.filter(price=decimal.Decimal("1.50"))) == deps(
        Post.objects.filter(price=decimal.Decimal("1.5"))
    )
    # more places than the column keeps: what the database compares is unclear, so drop it
    assert deps(Post.objects.filter(price=decimal.Decimal("1.505"))) == {POST: ALL}
    paris = dt.timezone(dt.timedelta(hours=2))
    local = dt.datetime(2024, 5, 1, 12, tzinfo=paris)
    utc = dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)
    assert deps(Post.objects.filter(created=local)) == {POST: conjs({"created": utc})}


def test_collations_and_vendors() -> None:
    # NOCASE: name='abc' matches 'ABC' in SQL, so a key on 'abc' would be too narrow
    assert deps(Nocase.objects.filter(name="abc", label="l")) == {
        "depsapp_nocase": conjs({"label": "l"})
    }


def test_text_only_counts_where_comparison_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    qs = Post.objects.filter(title="a", score=1, author__name__isnull=False)
    assert deps(qs, using="default") == {POST: conjs({"title": "a", "score": 1}), AUTHOR: ALL}
    monkeypatch.setattr(connections["other"], "vendor", "mysql")  # case-insensitive collations
    monkeypatch.setattr(dependencies, "_exact_text", {})  # vendors are cached per alias
    assert deps(qs, using="default") == {POST: conjs({"title": "a", "score": 1}), AUTHOR: ALL}
    assert deps(qs, using="other") == {POST: conjs({"score": 1}), AUTHOR: ALL}
    assert deps(qs) == {POST: conjs({"score": 1}), AUTHOR: ALL}  # any database may run it


def test_db_column_custom_table_and_uuid() -> None:
    qs = LegacyItem.objects.filter(code="A", qty=3, owner=5)
    assert deps(qs) == {"depsapp_legacyitem": conjs({"ITEM_CODE": "A", "QTY": 3, "OWNER_REF": 5})}
    key = uuid.UUID("12345678123456781234567812345678")
    assert deps(Document.objects.filter(pk=str(key))) == {"deps_documents": conjs({"id": key})}
    assert deps(Folder.objects.filter(document__pk=key.hex, name="f")) == {
        "depsapp_folder": conjs({"document_id": key, "name": "f"})
    }


# -- joins ----------------------------------------------------------------------------------------


def test_join_conditions_stay_on_their_alias() -> None:
    qs = Post.objects.filter(category__name="x", published=True)
    assert deps(qs) == {POST: conjs({"published": True}), CAT: conjs({"name": "x"})}


def test_join_equalities_propagate() -> None:
    qs = Post.objects.filter(category=3).values("title", "category__name")
    assert deps(qs) == {POST: conjs({"category_id": 3}), CAT: conjs({"id": 3})}
    # the other way round: category.id known from a lookup on the category alias
    qs = Post.objects.filter(category__name="x", category__pk__in=[1, 2]).values("category__slug")
    assert deps(qs) == {
        POST: conjs({"category_id": 1}, {"category_id": 2}),
        CAT: conjs({"id": 1, "name": "x"}, {"id": 2, "name": "x"}),
    }


def test_or_across_joins_keeps_each_disjunct_whole() -> None:
    qs = Post.objects.filter(Q(category__name="x") | Q(score=5))
    # in the second disjunct any category row may be joined: table-wide
    assert deps(qs) == {POST: ALL, CAT: ALL}


def test_self_referencing_fk() -> None:
    assert deps(Node.objects.filter(parent__name="a", name="b")) == {
        NODE: conjs({"name": "b"}, {"name": "a"})
    }
    assert deps(Node.objects.filter(parent=4)) == {NODE: conjs({"parent_id": 4})}
    assert deps(Node.objects.filter(parent__parent__name="r")) == {NODE: ALL}
    assert deps(Node.objects.filter(pk=2).values("kids__name")) == {
        NODE: conjs({"id": 2}, {"parent_id": 2})
    }


def test_many_to_many_reads_through_and_target() -> None:
    assert deps(Post.objects.filter(tags__name="x")) == {
        POST: ALL,
        POST_TAGS: ALL,
        TAG: conjs({"name": "x"}),
    }
    assert deps(Post.objects.filter(tags=3)) == {POST: ALL, POST_TAGS: conjs({"tag_id": 3})}
    assert deps(Post.objects.filter(pk=1).values("tags__name")) == {
        POST: conjs({"id": 1}),
        POST_TAGS: conjs({"post_id": 1}),
        TAG: ALL,
    }
    assert deps(Tag.objects.filter(posts=1)) == {
        TAG: ALL,
        POST_TAGS: conjs({"post_id": 1}),
    }


def test_explicit_through() -> None:
    qs = Person.objects.filter(groups__name="g", membership__role="admin")
    assert deps(qs) == {  # one filter() call: one join to the through table
        "depsapp_person": ALL,
        "depsapp_membership": conjs({"role": "admin"}),
        "depsapp_group": conjs({"name": "g"}),
    }
    assert deps(Group.objects.filter(pk=1).values("members__name")) == {
        "depsapp_group": conjs({"id": 1}),
        "depsapp_membership": conjs({"group_id": 1}),
        "depsapp_person": ALL,
    }


def test_proxy_reads_the_concrete_table() -> None:
    assert deps(ProxyPost.objects.filter(pk=1)) == {POST: conjs({"id": 1})}


def test_multi_table_inheritance() -> None:
    assert deps(Restaurant.objects.filter(pk=3)) == {
        REST: conjs({"place_ptr_id": 3}),
        PLACE: conjs({"id": 3}),
    }
    assert deps(Restaurant.objects.filter(name="x", serves_pizza=True)) == {
        REST: conjs({"serves_pizza": True}),
        PLACE: conjs({"name": "x"}),
    }
    # default columns come from both tables even with no join in the WHERE
    assert deps(Restaurant.objects.all()) == {REST: ALL, PLACE: ALL}
    assert deps(Restaurant.objects.values("serves_pizza")) == {REST: ALL}
    assert deps(ProxyRestaurant.objects.filter(pk=2)) == {
        REST: conjs({"place_ptr_id": 2}),
        PLACE: conjs({"id": 2}),
    }
    assert model_dependencies(ProxyRestaurant) == {REST: ALL, PLACE: ALL}
    assert deps(Place.objects.filter(restaurant__serves_pizza=True)) == {
        PLACE: ALL,
        REST: conjs({"serves_pizza": True}),
    }


def test_select_related() -> None:
    qs = Post.objects.select_related("category", "author").filter(category=2)
    assert deps(qs) == {POST: conjs({"category_id": 2}), CAT: conjs({"id": 2}), AUTHOR: ALL}
    # select_related() follows non-null foreign keys only
    assert deps(select_all(Post.objects.filter(pk=1))) == {POST: conjs({"id": 1}), CAT: ALL}
    qs = Comment.objects.select_related("post__category").filter(post=9)
    assert deps(qs) == {
        COMMENT: conjs({"post_id": 9}),
        POST: conjs({"id": 9}),
        CAT: ALL,
    }
    # a reverse one-to-one; a related multi-table child brings its parent table
    assert deps(Place.objects.select_related("restaurant").filter(pk=1)) == {
        PLACE: conjs({"id": 1}),
        REST: conjs({"place_ptr_id": 1}),
    }
    assert deps(Comment.objects.select_related("post").filter(text="x")) == {
        COMMENT: conjs({"text": "x"}),
        POST: ALL,
    }
    qs = Restaurant.objects.select_related("chef").filter(chef__name="c")
    assert deps(qs) == {REST: ALL, PLACE: ALL, AUTHOR: conjs({"name": "c"})}


def test_ordering_joins() -> None:
    # Category.Meta.ordering = ["name"]: ordering by the FK joins category
    assert deps(Post.objects.filter(score=1).order_by("category")) == {
        POST: conjs({"score": 1}),
        CAT: ALL,
    }
    assert deps(Post.objects.filter(score=1).order_by("category_id")) == {POST: conjs({"score": 1})}
    assert deps(Post.objects.filter(score=1).order_by("author")) == {POST: conjs({"score": 1})}
    assert deps(Post.objects.filter(score=1).order_by(F("author__name").desc())) == {
        POST: conjs({"score": 1}),
        AUTHOR: ALL,
    }
    assert deps(Comment.objects.filter(post=2).order_by("post__category__name")) == {
        COMMENT: conjs({"post_id": 2}),
        POST: conjs({"id": 2}),
        CAT: ALL,
    }


def test_distinct_on_fields_join_like_ordering() -> None:
    qs = Post.objects.filter(score=1).order_by("category__name").distinct("category__name")
    assert deps(qs) == {POST: conjs({"score": 1}), CAT: ALL}


def test_filtered_relation() -> None:
    qs = Category.objects.annotate(
        live=FilteredRelation("post", condition=Q(post__published=True))
    ).filter(live__score=3)
    assert deps(qs) == {CAT: ALL, POST: conjs({"score": 3})}


# -- subqueries, aggregates, unions ---------------------------------------------------------------


def test_in_subquery() -> None:
    qs = Post.objects.filter(category__in=Category.objects.filter(slug="news"))
    assert deps(qs) == {POST: ALL, CAT: conjs({"slug": "news"})}
    qs = Post.objects.filter(pk__in=Comment.objects.filter(approved=True).values("post"))
    assert deps(qs) == {POST: ALL, COMMENT: conjs({"approved": True})}


def test_exists_and_correlated_subqueries() -> None:
    inner = Comment.objects.filter(post=OuterRef("pk"), approved=True)
    assert deps(Post.objects.filter(Exists(inner), score=2)) == {
        POST: conjs({"score": 2}),
        COMMENT: conjs({"approved": True}),
    }
    assert deps(Post.objects.exclude(Exists(inner))) == {
        POST: ALL,
        COMMENT: conjs({"approved": True}),
    }
    first = Subquery(Comment.objects.filter(post=OuterRef("pk")).order_by("-id").values("text")[:1])
    assert deps(Post.objects.filter(pk=1).annotate(first=first)) == {
        POST: conjs({"id": 1}),
        COMMENT: ALL,
    }
    assert deps(Post.objects.order_by(Subquery(inner.values("id")[:1]))) == {
        POST: ALL,
        COMMENT: conjs({"approved": True}),
    }


def test_exclude_across_many_valued_relation() -> None:
    assert deps(Post.objects.exclude(tags__name="x")) == {
        POST: ALL,
        POST_TAGS: ALL,
        TAG: conjs({"name": "x"}),
    }


def test_aggregates_over_relations() -> None:
    assert deps(Category.objects.annotate(n=Count("post")).filter(pk=3)) == {
        CAT: conjs({"id": 3}),
        POST: conjs({"category_id": 3}),
    }
    qs = Category.objects.annotate(n=Count("post", filter=Q(post__published=True)))
    assert deps(qs) == {CAT: ALL, POST: ALL}
    qs = Post.objects.values("category").annotate(top=Max("score")).filter(top__gt=3)
    assert deps(qs) == {POST: ALL}


def test_unions() -> None:
    qs = Post.objects.filter(pk=1).values("pk").union(Comment.objects.filter(pk=2).values("pk"))
    assert deps(qs) == {POST: conjs({"id": 1}), COMMENT: conjs({"id": 2})}
    qs = Post.objects.filter(score=1).intersection(Post.objects.filter(published=True))
    assert deps(qs) == {POST: conjs({"score": 1}, {"published": True})}


def captured(run: Callable[[], object]) -> list[Any]:
    """The Query objects the ORM hands to the SQL compiler while ``run()`` executes."""
    seen: list[Any] = []
    original = SQLCompiler.execute_sql

    def spy(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.query)
        return original(self, *args, **kwargs)

    SQLCompiler.execute_sql = spy  # type: ignore[method-assign]
    try:
        run()
    except Exception:
        pass
    finally:
        SQLCompiler.execute_sql = original  # type: ignore[method-assign]
    return seen


@pytest.mark.django_db
def test_m2m_prefetch_is_cacheable() -> None:
    # Django selects the through table's column with extra(select={...: '"table"."col"'})
    post = Post.objects.create(category=Category.objects.create(name="c", slug="c"), title="t")
    _, tags, comments = captured(
        lambda: list(Post.objects.filter(pk=post.pk).prefetch_related("tags", "comments"))
    )
    assert query_dependencies(tags) == {TAG: ALL, POST_TAGS: conjs({"post_id": post.pk})}
    assert query_dependencies(comments) == {COMMENT: conjs({"post_id": post.pk})}
    column = Tag.objects.extra(select={"x": '"depsapp_tag"."name"'})
    assert deps(column) == {TAG: ALL}
    with pytest.raises(UncacheableQuery):
        deps(Tag.objects.extra(select={"x": '"depsapp_tag"."name" || %s'}, select_params=["a"]))


@pytest.mark.django_db
def test_count_exists_aggregate_as_the_compiler_sees_them() -> None:
    (count,) = captured(lambda: Post.objects.filter(category=2).count())
    assert query_dependencies(count) == {POST: conjs({"category_id": 2})}
    (sliced,) = captured(lambda: Post.objects.filter(score=1)[:5].count())  # an AggregateQuery
    assert query_dependencies(sliced) == {POST: conjs({"score": 1})}
    (exists,) = captured(lambda: Comment.objects.filter(post__title="t").exists())
    assert query_dependencies(exists) == {COMMENT: ALL, POST: conjs({"title": "t"})}
    (total,) = captured(lambda: Post.objects.filter(published=True).aggregate(Sum("score")))
    assert query_dependencies(total) == {POST: conjs({"published": True})}


# -- uncacheable ----------------------------------------------------------------------------------


class Custom(Func):
    function = "UPPER"


class NotEqual(Lookup):
    lookup_name = "ne_deps"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} <> {rhs}", [*lhs_params, *rhs_params]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Post.objects.extra(select={"x": "1"}),
        lambda: Post.objects.extra(where=["score > 1"]),
        lambda: Post.objects.extra(tables=["depsapp_tag"]),
        lambda: Post.objects.annotate(x=RawSQL("SELECT 1", [])),
        lambda: Post.objects.filter(pk__in=RawSQL("SELECT id FROM depsapp_tag", [])),
        lambda: Post.objects.order_by("?"),
        lambda: Post.objects.annotate(r=Random()),
        lambda: Post.objects.filter(created__lt=Now()),
        lambda: Post.objects.annotate(u=Custom("title")),
        lambda: Post.objects.annotate(u=Func(F("title"), function="UPPER")),
        lambda: Post.objects.annotate(u=Lower("title", template="RANDOM()")),
        lambda: Post.objects.filter(pk__in=Subquery(Tag.objects.annotate(r=Random()).values("pk"))),
        lambda: Post.objects.select_for_update(),
        lambda: Post.objects.filter(Exists(Comment.objects.filter(text=Custom(Value("x"))))),
        lambda: Post.objects.union(Post.objects.extra(where=["1=1"])),
    ],
)
def test_uncacheable(make: Callable[[], Any]) -> None:
    with pytest.raises(UncacheableQuery):
        deps(make())


def test_uuid_functions_are_uncacheable() -> None:
    """UUID4/UUID7 exist from Django 6.0; where they exist, they are never cached."""
    from django.db.models import functions

    makers = [getattr(functions, name) for name in ("UUID4", "UUID7") if hasattr(functions, name)]
    assert bool(makers) == (django.VERSION >= (6, 0))
    for make in makers:
        with pytest.raises(UncacheableQuery, match=make.__name__):
            deps(Document.objects.annotate(u=make()))


def test_custom_lookup_is_uncacheable() -> None:
    IntegerField.register_lookup(NotEqual)
    try:
        with pytest.raises(UncacheableQuery, match="not Django"):
            deps(Post.objects.filter(score__ne_deps=3))
    finally:
        IntegerField._unregister_lookup(NotEqual)  # type: ignore[attr-defined]


def test_raw_query_is_uncacheable() -> None:
    with pytest.raises(UncacheableQuery):
        query_dependencies(Post.objects.raw("SELECT * FROM depsapp_post").query)  # type: ignore[arg-type]


def test_now_in_a_subquery_of_an_annotation() -> None:
    sub = Subquery(Comment.objects.filter(post=OuterRef("pk")).annotate(n=Now()).values("n")[:1])
    with pytest.raises(UncacheableQuery, match="Now"):
        deps(Post.objects.annotate(c=sub))


# -- values and keys ------------------------------------------------------------------------------


def test_normalize() -> None:
    assert normalize(Post.Rank.HIGH) == 2 and type(normalize(Post.Rank.HIGH)) is int
    assert type(normalize(Post.Status.LIVE)) is str
    assert normalize(True) is True and normalize(1) is not True
    assert normalize(decimal.Decimal("1.50")) == decimal.Decimal("1.5")
    assert str(normalize(decimal.Decimal("0.00"))) == "0"
    assert str(normalize(decimal.Decimal("-0"))) == "0"
    assert str(normalize(decimal.Decimal("100"))) == "1E+2"
    assert normalize(decimal.Decimal("1234567890.1234567")) is UNKNOWN  # sqlite keeps REALs
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert normalize(aware) == dt.datetime(2024, 1, 1, 17, tzinfo=dt.timezone.utc)
    assert normalize(aware).tzinfo is dt.timezone.utc  # type: ignore[union-attr]
    assert normalize(dt.datetime(2024, 1, 1)).tzinfo is None  # type: ignore[union-attr]
    assert normalize(-0.0) == 0.0 and str(normalize(-0.0)) == "0.0"
    assert normalize(float("nan")) is UNKNOWN
    for unknown in ([1], {"a": 1}, b"x", dt.timedelta(1), object(), Value(1)):
        assert normalize(unknown) is UNKNOWN
    assert normalize(dt.time(1, 2, tzinfo=dt.timezone.utc)) is UNKNOWN


def test_row_conj_values_match_the_lookup_side() -> None:
    created = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    row = row_conj_values(
        Post,
        {
            "category_id": "3",
            "author": None,  # a relation's name, not its attname: ignored
            "title": "t",
            "status": Post.Status.LIVE,
            "rank": Post.Rank.HIGH,
            "published": 1,
            "price": decimal.Decimal("2.50"),
            "created": created,
            "unknown": 5,
        },
    )
    assert row == {
        "category_id": 3,
        "title": "t",
        "status": "live",
        "rank": 2,
        "published": True,
        "price": decimal.Decimal("2.5"),
        "created": dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc),
    }
    qs = Post.objects.filter(
        category=3, status="live", rank=2, published=True, price="2.5", created=created, title="t"
    )
    ((conj,),) = [tuple(deps(qs)[POST])]
    assert stamp_key("p:", POST, conj) in row_stamp_keys("p:", POST, [scheme(conj)], row)
    assert row_conj_values(Post, {"price": decimal.Decimal("1.234")}) == {}
    assert row_conj_values(LegacyItem, {"code": "A", "owner_id": 4}) == {
        "ITEM_CODE": "A",
        "OWNER_REF": 4,
    }
    assert row_conj_values(Restaurant, {"name": "x", "serves_pizza": 0}) == {"serves_pizza": False}


def test_stamp_keys() -> None:
    assert stamp_key("fc:", POST, ()) == "fc:s:depsapp_post"
    key = stamp_key("fc:", POST, (("category_id", 3), ("published", True)))
    assert key.startswith("fc:s:depsapp_post:category_id,published:")
    assert len(key.rsplit(":", 1)[1]) == 24
    secret = "hunter2 <script>"
    assert secret not in stamp_key("fc:", POST, (("title", secret),))
    distinct = [1, True, "1", 1.0, decimal.Decimal(1), None, "", "N", dt.date(2024, 1, 1)]
    keys = {stamp_key("", POST, (("c", v),)) for v in distinct}
    assert len(keys) == len(distinct)  # bool is not int, str is not int, None is not ""
    # ambiguous concatenations stay apart
    assert stamp_key("", "t", (("a", "x,"), ("b", "y"))) != stamp_key(
        "", "t", (("a", "x"), ("b", ",y"))
    )
    assert stamp_key("", "t", (("a", Post.Rank.HIGH),)) == stamp_key("", "t", (("a", 2),))


def test_row_stamp_keys() -> None:
    row = {"category_id": 3, "published": True, "id": 9}
    keys = row_stamp_keys("p:", POST, [("category_id", "published"), ("id",), ("score",)], row)
    assert keys == [
        "p:s:depsapp_post",
        stamp_key("p:", POST, (("category_id", 3), ("published", True))),
        stamp_key("p:", POST, (("id", 9),)),
    ]


def test_model_instance_merge() -> None:
    assert model_dependencies(Post) == {POST: ALL}
    assert model_dependencies(ProxyPost) == {POST: ALL}
    assert model_dependencies(Restaurant) == {REST: ALL, PLACE: ALL}
    restaurant = Restaurant(pk=5, name="r", city="c")
    assert instance_dependencies(restaurant) == {
        REST: conjs({"place_ptr_id": 5}),
        PLACE: conjs({"id": 5}),
    }
    doc = Document(title="d")
    assert instance_dependencies(doc) == {"deps_documents": conjs({"id": doc.pk})}
    assert instance_dependencies(Post()) == {POST: ALL}
    assert merge({POST: conjs({"id": 1})}, {POST: conjs({"id": 2}), CAT: ALL}) == {
        POST: conjs({"id": 1}, {"id": 2}),
        CAT: ALL,
    }
    assert merge({POST: conjs({"id": 1})}, {POST: ALL}) == {POST: ALL}


# -- soundness against a real database ------------------------------------------------------------

PREFIX = "t:"
MODELS = [
    m
    for m in apps.get_app_config("depsapp").get_models(include_auto_created=True)
    if not m._meta.proxy
]


def when(h: int) -> dt.datetime:
    return dt.datetime(2024, 1, 1, h, tzinfo=dt.timezone.utc)


@pytest.fixture
def dataset(db: None) -> None:
    news, tech, misc, _ = (
        Category.objects.create(name=n, slug=n.lower()) for n in ("News", "Tech", "Misc", "Empty")
    )
    ann, bob, _ = (Author.objects.create(name=n) for n in ("ann", "bob", "cy"))
    django_, python, _ = (Tag.objects.create(name=n) for n in ("django", "python", "misc"))
    rows = [
        (news, ann, "hello", True, 5, "9.50", when(1), "live", 2),
        (news, None, "world", False, 1, "1.00", None, "draft", 1),
        (tech, bob, "orm", True, 5, "9.50", when(2), "live", 1),
        (tech, ann, "cache", False, 7, "0.10", when(1), "draft", 2),
        (misc, None, "misc", True, 0, "2.00", None, "live", 1),
        (tech, bob, "Hello", True, 1, "1.50", when(3), "draft", 1),
    ]
    posts = [
        Post.objects.create(
            category=c,
            author=a,
            title=t,
            published=p,
            score=s,
            price=decimal.Decimal(pr),
            created=cr,
            status=st,
            rank=r,
        )
        for c, a, t, p, s, pr, cr, st, r in rows
    ]
    posts[0].tags.set([django_, python])
    posts[2].tags.set([django_])
    posts[3].tags.set([python])
    for post, text, ok in [(0, "hi", True), (0, "meh", False), (2, "hi", False), (3, "yo", True)]:
        Comment.objects.create(post=posts[post], text=text, approved=ok)
    root = Node.objects.create(name="root")
    a = Node.objects.create(name="a", parent=root)
    Node.objects.create(name="leaf", parent=a)
    Node.objects.create(name="b", parent=root)
    admins, users = Group.objects.create(name="admins"), Group.objects.create(name="users")
    p1, p2 = Person.objects.create(name="ann"), Person.objects.create(name="bob")
    Membership.objects.create(person=p1, group=admins, role="owner")
    Membership.objects.create(person=p2, group=users, role="member")
    Membership.objects.create(person=p1, group=users, role="member")
    Place.objects.create(name="Park", city="Rome")
    Restaurant.objects.create(name="Luigi", city="Rome", serves_pizza=True, chef=ann)
    Restaurant.objects.create(name="Chez", city="Paris", serves_pizza=False, chef=bob)
    doc = Document.objects.create(id=uuid.UUID(int=7), title="spec", author=ann)
    Document.objects.create(id=uuid.UUID(int=8), title="memo")
    Folder.objects.create(name="f", document=doc)
    LegacyItem.objects.create(code="A1", qty=3, owner=ann)
    LegacyItem.objects.create(code="B2", qty=5, owner=bob)
    for name in ("abc", "ABC", "x"):
        Nocase.objects.create(name=name, label=name)
    Sample.objects.create(ratio=0.5, day=dt.date(2024, 1, 1), ref=uuid.UUID(int=1))
    Sample.objects.create(ratio=1.5, day=dt.date(2024, 1, 2), ref=uuid.UUID(int=2))


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


# Each entry runs ORM reads; every Query they hand to the compiler is checked.
READS: list[Callable[[], object]] = [
    lambda: Post.objects.get(pk=1),
    lambda: list(Post.objects.filter(category=1, published=True)),
    lambda: list(Post.objects.filter(category__name="Tech").order_by("title", "id")),
    lambda: list(Post.objects.filter(Q(category__slug="news") | Q(score__gte=5))),
    lambda: list(Post.objects.filter(Q(score=1) ^ Q(published=True))),
    lambda: list(Post.objects.filter(tags__name="django").values_list("id", flat=True)),
    lambda: list(Post.objects.exclude(tags__name="django")),
    lambda: list(Post.objects.filter(author__isnull=True)),
    lambda: list(Post.objects.filter(author__name__isnull=True)),
    lambda: list(Post.objects.filter(author__name="ann").values("title", "author__name")),
    lambda: list(Category.objects.filter(post__isnull=True)),
    lambda: list(Category.objects.annotate(n=Count("post")).values_list("id", "n")),
    lambda: list(Category.objects.annotate(n=Count("post", filter=Q(post__published=True)))),
    lambda: list(Category.objects.filter(pk=2).annotate(n=Sum("post__score"))),
    lambda: list(
        Post.objects.filter(Exists(Comment.objects.filter(post=OuterRef("pk"), approved=True)))
    ),
    lambda: list(
        Post.objects.annotate(
            first=Subquery(
                Comment.objects.filter(post=OuterRef("pk")).order_by("id").values("text")[:1]
            )
        ).values_list("id", "first")
    ),
    lambda: list(Post.objects.filter(category__in=Category.objects.filter(slug="news"))),
    lambda: list(Post.objects.filter(pk__in=[1, 2, 3]).select_related("category", "author")),
    lambda: list(select_all(Post.objects.filter(score=5))),
    lambda: list(Post.objects.filter(status=Post.Status.LIVE, rank=Post.Rank.HIGH)),
    lambda: list(Post.objects.filter(price=decimal.Decimal("9.5"))),
    lambda: list(Post.objects.filter(price=decimal.Decimal("9.501"))),  # 4.2 sends '9.50'
    lambda: list(Post.objects.exclude(score=1).filter(published=True)),
    lambda: list(Post.objects.filter(~Q(title="hello") & Q(category=1))),
    lambda: list(Post.objects.filter(~Q(category__name="Tech"), ~Q(author__isnull=True))),
    lambda: list(Post.objects.filter(created=when(1))),
    lambda: list(Post.objects.filter(title__in=["hello", "orm", "Hello"])),
    lambda: list(Post.objects.filter(score=1).order_by("category")),
    lambda: list(Post.objects.order_by("author__name", "id").values_list("id", flat=True)),
    lambda: list(ProxyPost.objects.filter(published=True)),
    lambda: list(Post.objects.filter(pk=1).union(Post.objects.filter(score=1)).order_by("id")),
    lambda: Post.objects.filter(category=2).count(),
    lambda: Post.objects.filter(title="orm").exists(),
    lambda: Post.objects.filter(published=True).aggregate(Sum("score"), Max("price")),
    lambda: Post.objects.filter(score=5)[:1].count(),
    lambda: list(Post.objects.filter(pk=1).prefetch_related("tags", "comments")),
    lambda: Post.objects.get(pk=3).category.name,
    lambda: list(Post.objects.annotate(low=Lower("title")).filter(low="hello")),
    lambda: list(Post.objects.filter(~Q(category__name="Tech"))),
    lambda: list(Post.objects.filter(comments__text="hi", comments__approved=True)),
    lambda: list(Post.objects.filter(comments__text="hi").filter(comments__approved=True)),
    lambda: list(Category.objects.filter(post__author__name="ann").distinct()),
    lambda: list(Post.objects.filter(category__post__score=7)),
    lambda: list(Post.objects.filter(score=5).filter(score=6)),
    lambda: list(Post.objects.none()),
    lambda: list(Comment.objects.filter(post__category__slug="news", approved=False)),
    lambda: list(Comment.objects.select_related("post__category").filter(post=1)),
    lambda: list(Node.objects.filter(parent__name="root")),
    lambda: list(Node.objects.filter(parent__parent__name="root")),
    lambda: list(Node.objects.filter(kids__name="leaf")),
    lambda: list(Node.objects.filter(pk=1).values("kids__name")),
    lambda: list(Person.objects.filter(groups__name="admins")),
    lambda: list(Group.objects.filter(membership__role="member", members__name="ann")),
    lambda: list(Group.objects.filter(pk=2).values_list("members__name", flat=True)),
    lambda: list(Restaurant.objects.filter(name="Luigi")),
    lambda: list(Restaurant.objects.filter(pk=4)),
    lambda: list(Restaurant.objects.all()),
    lambda: list(ProxyRestaurant.objects.filter(city="Rome")),
    lambda: list(Place.objects.filter(restaurant__serves_pizza=True)),
    lambda: list(Place.objects.select_related("restaurant").filter(city="Rome")),
    lambda: list(Restaurant.objects.select_related("chef").filter(chef__name="ann")),
    lambda: list(Folder.objects.filter(document__title="spec")),
    lambda: list(Document.objects.filter(pk=uid(7))),
    lambda: list(Document.objects.filter(author=None)),
    lambda: list(LegacyItem.objects.filter(code="A1", qty=3)),
    lambda: list(LegacyItem.objects.filter(owner__name="bob")),
    lambda: list(Nocase.objects.filter(name="abc")),
    lambda: list(Sample.objects.filter(ratio=0.5)),
    lambda: list(Sample.objects.filter(day=dt.date(2024, 1, 2))),
    lambda: list(Sample.objects.filter(ref=uid(1))),
    lambda: list(
        Category.objects.annotate(
            live=FilteredRelation("post", condition=Q(post__published=True))
        ).filter(live__score=5)
    ),
]


def spy_reads(run: Callable[[], object]) -> list[Any]:
    """Queries ``run()`` executes; checks that compiling a query does not change its deps."""
    seen: list[Any] = []
    original = SQLCompiler.execute_sql

    def spy(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        before = query_dependencies(self.query)
        try:
            return original(self, *args, **kwargs)
        finally:
            assert query_dependencies(self.query) == before, self.query
            seen.append(self.query)

    SQLCompiler.execute_sql = spy  # type: ignore[method-assign]
    try:
        run()
    except (Post.DoesNotExist, Category.DoesNotExist):
        pass
    finally:
        SQLCompiler.execute_sql = original  # type: ignore[method-assign]
    return seen


def run_sql(query: Any) -> list[Any]:
    from django.core.exceptions import EmptyResultSet

    try:
        sql, params = query.get_compiler("default").as_sql()
    except EmptyResultSet:
        return ["<empty>"]
    with connections["default"].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return rows if "ORDER BY" in sql else sorted(rows, key=repr)


def snapshot() -> dict[str, dict[Any, dict[str, Any]]]:
    """Every row of every table, as row_conj_values gives it to the write side."""
    tables: dict[str, dict[Any, dict[str, Any]]] = {}
    for model in MODELS:
        names = [f.attname for f in model._meta.local_concrete_fields]
        rows = model._base_manager.values_list(*names)
        tables[model._meta.db_table] = {
            row[0]: row_conj_values(model, dict(zip(names, row, strict=True))) for row in rows
        }
    return tables


def changed_rows(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for table, rows in before.items():
        for pk in rows.keys() | after[table].keys():
            old, new = rows.get(pk), after[table].get(pk)
            if old != new:
                out.setdefault(table, []).extend(r for r in (old, new) if r is not None)
    return out


def writes() -> Iterator[tuple[str, Callable[[], object]]]:
    """Deletions, copies and single-field changes of a few rows of every model."""
    for model in MODELS:
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        pool = {
            f.attname: list(dict.fromkeys(model._base_manager.values_list(f.attname, flat=True)))
            for f in fields
        }
        for f in fields:
            if f.is_relation:  # also rows nothing points at yet
                pool[f.attname] += [
                    pk
                    for pk in f.related_model._base_manager.values_list("pk", flat=True)
                    if pk not in pool[f.attname]
                ][:2]
        pks = list(model._base_manager.order_by("pk").values_list("pk", flat=True))
        for pk in dict.fromkeys(pks[:2] + pks[-2:]):
            label = f"{model.__name__}({pk})"
            fresh = lambda model=model, pk=pk: model._base_manager.get(pk=pk)  # noqa: E731
            yield f"delete {label}", lambda fresh=fresh: fresh().delete()
            yield f"copy {label}", lambda fresh=fresh: copy(fresh())
            current = fresh()
            for f in fields:
                for value in pool[f.attname][:6] + ([None] if f.null else []):
                    if value != getattr(current, f.attname):
                        yield (
                            f"{label}.{f.attname}={value!r}",
                            partial(update, fresh, f.attname, value),
                        )


def update(fresh: Callable[[], Any], attname: str, value: Any) -> None:
    obj = fresh()
    setattr(obj, attname, value)
    obj.save()


def copy(obj: Any) -> None:
    model = type(obj)
    for parent in [model, *model._meta.get_parent_list()]:
        setattr(obj, parent._meta.pk.attname, None)
    if isinstance(obj, Document):
        obj.pk = uuid.uuid4()
    if isinstance(obj, Category):
        obj.slug += "2"
    obj._state.adding = True
    obj.save(force_insert=True)


def violations(
    reads: list[Any], baseline: list[Any], deps_list: list[Deps]
) -> tuple[list[str], int]:
    """Writes that changed a read's result without touching any of its stamp keys; and how
    many (write, read) pairs changed a result at all."""
    found: list[str] = []
    changed = 0
    base = snapshot()
    for label, write in writes():
        with transaction.atomic():
            try:
                with transaction.atomic():
                    write()
            except IntegrityError:
                transaction.set_rollback(True)
                continue
            changes = changed_rows(base, snapshot())
            for queries, before, d in zip(reads, baseline, deps_list, strict=True):
                if [run_sql(q) for q in queries] != before:
                    changed += 1
                    if not hits(d, changes):
                        found.append(f"{label} changed {queries[0]} but hit none of {d}")
            transaction.set_rollback(True)
    return found, changed


def hits(d: Deps, changes: dict[str, list[dict[str, Any]]]) -> bool:
    """Does an old or new row of some written table match one of the read's stamp keys?"""
    for table, rows in changes.items():
        read_keys = {stamp_key(PREFIX, table, c) for c in d.get(table, ())}
        schemes = {scheme(c) for c in d.get(table, ())}
        if any(set(row_stamp_keys(PREFIX, table, schemes, row)) & read_keys for row in rows):
            return True
    return False


@pytest.mark.django_db(transaction=True, reset_sequences=True)
@override_settings(FRESHCACHE_ENABLED=False)
def test_a_write_that_changes_a_result_always_hits_one_of_its_stamps(dataset: None) -> None:
    reads = [spy_reads(read) for read in READS]
    assert all(reads)
    deps_list = [merge(*(query_dependencies(q) for q in queries)) for queries in reads]
    baseline = [[run_sql(q) for q in queries] for queries in reads]
    found, changed = violations(reads, baseline, deps_list)
    print(f"{len(list(writes()))} writes x {len(reads)} reads: {changed} changed a result")
    assert not found, "\n".join(found[:20])
    assert changed > 300  # the writes really do change results: the check is not vacuous
    # and the check bites: a dependency narrower than the truth is caught
    narrowed = [{table: conjs({"id": -1}) for table in d} for d in deps_list]
    assert violations(reads, baseline, narrowed)[0]
