"""Functions and views cached like querysets: samples, captured reads, keys, async."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import RequestFactory, override_settings
from django.views import View

from freshcache import cached_as, cached_view_as, invalidate_all
from freshcache.signals import cache_read
from tests.conftest import run_async, snapshot_after
from tests.testapp.models import Author, Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


class Calls:
    """Counts how often a cached function really ran."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


@pytest.fixture
def c1() -> Category:
    return Category.objects.create(title="one", slug="one")


@pytest.fixture
def c2() -> Category:
    return Category.objects.create(title="two", slug="two")


def test_queryset_sample(c1: Category, c2: Category) -> None:
    calls = Calls()

    @cached_as(Post.objects.filter(category=c1))
    def titles() -> list[str]:
        calls()
        return [p.title for p in Post.objects.filter(category=c1)]

    Post.objects.create(title="a", category=c1)
    assert titles() == ["a"]
    assert titles() == ["a"]
    assert calls.n == 1
    Post.objects.create(title="x", category=c2)  # not matched by the sample
    assert titles() == ["a"]
    assert calls.n == 1
    Post.objects.create(title="b", category=c1)
    assert titles() == ["a", "b"]
    assert calls.n == 2


def test_a_sampled_function_that_writes_stores_nothing_before_the_commit(c1: Category) -> None:
    """It may read its own uncommitted write: stored, that would outlive a rollback."""
    from django.db import transaction

    @cached_as(Post)
    def first_title() -> str:
        post, _ = Post.objects.get_or_create(title="draft", category=c1)
        return post.title

    with pytest.raises(RuntimeError), transaction.atomic():
        assert first_title() == "draft"
        raise RuntimeError("roll back")
    assert not Post.objects.nocache().exists()
    calls = Calls()

    @cached_as(Post)
    def count() -> int:
        calls()
        return Post.objects.count()

    with pytest.raises(RuntimeError), transaction.atomic():
        Post.objects.create(title="x", category=c1)
        assert count() == 1  # dirty before the call: not even looked up
        raise RuntimeError("roll back")
    assert first_title() == "draft"  # runs again: nothing was kept from the rolled-back one
    assert Post.objects.nocache().count() == 1


def test_a_sampled_function_in_a_snapshot_stores_nothing(c1: Category) -> None:
    """Inside REPEATABLE READ the function reads a snapshot that may predate the samples'
    stamps, read just before it ran: a write committed meanwhile must not be hidden."""
    if connection.vendor != "postgresql":
        return  # SQLite has no such level; its snapshot rule is in test_transactions
    calls = Calls()

    @cached_as(Category)
    def titles() -> list[str]:
        calls()
        return sorted(c.title for c in Category.objects.all())

    with snapshot_after(lambda: Category.objects.filter(pk=c1.pk).update(title="uno")):
        assert titles() == ["one"]  # the snapshot's answer, with stamps read after the write
    assert titles() == ["uno"]
    assert calls.n == 2


def test_model_and_instance_samples_mixed(c1: Category, c2: Category) -> None:
    calls = Calls()
    ann = Author.objects.create(name="Ann")

    @cached_as(Category, ann, timeout=60)
    def summary() -> str:
        calls()
        return f"{Category.objects.count()} {Author.objects.get(pk=ann.pk).name}"

    assert summary() == "2 Ann"
    Author.objects.create(name="Bob")  # another author: not the sampled row
    assert summary() == "2 Ann"
    assert calls.n == 1
    Author.objects.filter(pk=ann.pk).update(name="Anna")
    assert summary() == "2 Anna"
    Category.objects.create(title="three", slug="three")  # any row of the model
    assert summary() == "3 Anna"
    assert calls.n == 3


def test_no_samples_records_what_the_function_reads(c1: Category, c2: Category) -> None:
    calls = Calls()
    Post.objects.create(title="a", category=c1)

    @cached_as(timeout=60)
    def page() -> tuple[str, list[str]]:
        calls()
        category = Category.objects.get(pk=c1.pk)
        return category.title, [p.title for p in Post.objects.filter(category=category)]

    assert page() == ("one", ["a"])
    assert page() == ("one", ["a"])
    assert calls.n == 1
    Post.objects.create(title="x", category=c2)  # outside what it read
    assert page() == ("one", ["a"])
    assert calls.n == 1
    Category.objects.filter(pk=c1.pk).update(title="ONE")
    assert page() == ("ONE", ["a"])
    Post.objects.create(title="b", category=c1)
    assert page() == ("ONE", ["a", "b"])
    assert calls.n == 3


def test_nested_cached_functions_and_cached_queries(c1: Category) -> None:
    """The outer function depends on what inner functions read, hit or miss."""
    outer_calls, inner_calls = Calls(), Calls()
    Post.objects.create(title="a", category=c1)

    @cached_as(timeout=60)
    def inner() -> list[str]:
        inner_calls()
        return [p.title for p in Post.objects.filter(category=c1)]  # a cached query too

    @cached_as(timeout=60)
    def outer() -> str:
        outer_calls()
        return ",".join(inner()) + "|" + Category.objects.get(pk=c1.pk).title

    assert inner() == ["a"]  # the inner result is cached first: outer will get a hit
    assert outer() == "a|one"
    assert (outer_calls.n, inner_calls.n) == (1, 1)
    assert outer() == "a|one"
    assert outer_calls.n == 1
    Post.objects.create(title="b", category=c1)  # changes what inner read
    assert outer() == "a,b|one"
    assert (outer_calls.n, inner_calls.n) == (2, 2)


def test_raw_sql_inside_makes_it_uncached(c1: Category) -> None:
    calls = Calls()

    @cached_as(timeout=60)
    def raw_count() -> int:
        calls()
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM testapp_post")
            return int(cursor.fetchone()[0])

    assert raw_count() == 0
    Post.objects.create(title="a", category=c1)
    assert raw_count() == 1
    assert calls.n == 2


def test_uncacheable_query_inside_makes_it_uncached(c1: Category) -> None:
    calls = Calls()

    @cached_as(timeout=60)
    def random_post() -> int:
        calls()
        return len(list(Post.objects.order_by("?")))

    random_post()
    random_post()
    assert calls.n == 2


def test_arguments_extra_and_key(c1: Category, c2: Category) -> None:
    calls = Calls()

    @cached_as(Post, extra=lambda category, n=1: n * 10)
    def first_titles(category: Category, n: int = 1) -> list[str]:
        calls()
        return [p.title for p in Post.objects.filter(category=category)[:n]]

    Post.objects.create(title="a", category=c1)
    Post.objects.create(title="b", category=c1)
    assert first_titles(c1) == ["a"]
    assert first_titles(c1, n=2) == ["a", "b"]
    assert first_titles(c2) == []
    assert calls.n == 3
    assert first_titles(Category.objects.get(pk=c1.pk)) == ["a"]  # instances keyed by pk
    assert calls.n == 3
    assert first_titles.key(c1) != first_titles.key(c2)  # type: ignore[attr-defined]
    assert first_titles.key(c1) == first_titles.key(Category.objects.get(pk=c1.pk))  # type: ignore[attr-defined]
    first_titles.invalidate(c1)  # type: ignore[attr-defined]
    first_titles(c1)
    first_titles(c2)
    assert calls.n == 4


def test_extra_value_separates_keys(c1: Category) -> None:
    results = []
    for count in (1, 2):

        @cached_as(Post, extra=count)
        def block(count: int = count) -> int:
            return count

        results.append(block())
    assert results == [1, 2]


def test_methods(c1: Category) -> None:
    class Card:
        def __init__(self, category: Category) -> None:
            self.category = category

        def __repr__(self) -> str:
            return f"Card({self.category.pk})"

        @cached_as(Post)
        def count(self) -> int:
            return Post.objects.filter(category=self.category).count()

    Post.objects.create(title="a", category=c1)
    assert Card(c1).count() == 1
    Post.objects.create(title="b", category=c1)
    assert Card(c1).count() == 2


def test_unpicklable_result_is_returned_not_cached(c1: Category) -> None:
    calls = Calls()

    @cached_as(Post)
    def make_lock() -> Any:
        calls()
        return threading.Lock()

    assert make_lock() is not None
    assert make_lock() is not None
    assert calls.n == 2


def test_unkeyable_argument_is_not_cached(c1: Category) -> None:
    calls = Calls()

    @cached_as(Post)
    def echo(value: object) -> str:
        calls()
        return "ok"

    thing = object()
    assert echo(thing) == "ok"
    assert echo(thing) == "ok"
    assert calls.n == 2


def test_timeout_comes_from_the_samples_profiles(c1: Category, settings: Any) -> None:
    from freshcache.decorators import _Cached

    settings.FRESHCACHE = {"testapp.post": {"ops": "all", "timeout": 30}, "testapp.*": {}}
    settings.FRESHCACHE_DEFAULTS = {"timeout": 100}

    def f() -> None:
        return None

    assert _Cached(f, (Post, Category), None, None, None, "f").resolve_timeout() == 30
    assert _Cached(f, (Category,), None, None, None, "f").resolve_timeout() == 100
    assert _Cached(f, (Post,), 5, None, None, "f").resolve_timeout() == 5


def test_cache_read_signal(c1: Category) -> None:
    seen: list[tuple[Any, bool]] = []

    def receiver(sender: Any, func: Any, hit: bool, **kwargs: Any) -> None:
        if func is not None:
            seen.append((func.__name__, hit))

    @cached_as(Post)
    def f() -> int:
        return 1

    cache_read.connect(receiver)
    try:
        f()
        f()
    finally:
        cache_read.disconnect(receiver)
    assert seen == [("f", False), ("f", True)]


def test_invalidate_all_reaches_functions(c1: Category) -> None:
    calls = Calls()

    @cached_as(timeout=60)
    def nothing_read() -> int:
        calls()
        return 1

    nothing_read()
    nothing_read()
    invalidate_all()
    nothing_read()
    assert calls.n == 2


def test_async_function(c1: Category) -> None:
    calls = Calls()

    @cached_as(Post)
    async def count() -> int:
        calls()
        return await Post.objects.filter(category=c1).acount()

    assert run_async(count()) == 0
    assert run_async(count()) == 0
    assert calls.n == 1
    Post.objects.create(title="a", category=c1)
    assert run_async(count()) == 1


def test_async_function_without_samples(c1: Category) -> None:
    calls = Calls()

    @cached_as(timeout=60)
    async def titles() -> list[str]:
        calls()
        return [p.title async for p in Post.objects.filter(category=c1)]

    assert run_async(titles()) == []
    assert run_async(titles()) == []
    assert calls.n == 1
    Post.objects.create(title="a", category=c1)
    assert run_async(titles()) == ["a"]


def test_disabled_means_not_cached(c1: Category) -> None:
    calls = Calls()

    @cached_as(Post)
    def f() -> int:
        calls()
        return 1

    with override_settings(FRESHCACHE_ENABLED=False):
        f()
        f()
    assert calls.n == 2


# -- views -------------------------------------------------------------------------------------


def test_view_cached_by_path_and_query_string(c1: Category) -> None:
    calls = Calls()
    rf = RequestFactory()

    @cached_view_as(Post)
    def view(request: HttpRequest) -> HttpResponse:
        calls()
        return HttpResponse(f"{Post.objects.count()} {request.GET.get('q', '')}")

    assert view(rf.get("/list/")).content == b"0 "
    assert view(rf.get("/list/")).content == b"0 "
    assert view(rf.get("/list/?q=x")).content == b"0 x"
    assert calls.n == 2
    Post.objects.create(title="a", category=c1)
    assert view(rf.get("/list/")).content == b"1 "
    assert view(rf.head("/list/")).content == b"1 "
    assert calls.n == 3
    view.invalidate(rf.get("/list/").build_absolute_uri())  # type: ignore[attr-defined]
    assert view(rf.get("/list/")).content == b"1 "
    assert calls.n == 4


def test_cacheops_keyword_arguments_are_accepted(c1: Category) -> None:
    """``keep_fresh`` is what freshcache always does; a view keyed with a callable ``extra``
    needs the request to be invalidated, which the error says."""
    calls = Calls()

    @cached_as(Post, keep_fresh=True)
    def count() -> int:
        calls()
        return Post.objects.count()

    assert count() == count() == 0
    Post.objects.create(title="a", category=c1)
    assert count() == 1 and calls.n == 2

    @cached_view_as(Post, extra=lambda request: request.GET.get("u"), keep_fresh=True)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(Post.objects.count()))

    with pytest.raises(TypeError, match=r"pass \.invalidate\(\) the request"):
        view.invalidate("http://testserver/v/")  # type: ignore[attr-defined]


def test_view_only_caches_successful_get(c1: Category) -> None:
    calls = Calls()
    rf = RequestFactory()

    @cached_view_as(Post)
    def view(request: HttpRequest) -> HttpResponse:
        calls()
        if request.GET.get("missing"):
            return HttpResponse("no", status=404)
        if request.GET.get("stream"):
            return StreamingHttpResponse(iter([b"a", b"b"]))
        return HttpResponse("ok")

    for request in (
        rf.post("/v/"),
        rf.post("/v/"),
        rf.get("/v/?missing=1"),
        rf.get("/v/?missing=1"),
    ):
        view(request)
    assert calls.n == 4
    for _ in range(2):
        response = view(rf.get("/v/?stream=1"))
        assert b"".join(response.streaming_content) == b"ab"
    assert calls.n == 6


def test_view_per_user_extra_never_crosses_users(c1: Category) -> None:
    rf = RequestFactory()

    @cached_view_as(Post, extra=lambda request: request.user.is_staff)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("staff" if request.user.is_staff else "public")

    class U:
        def __init__(self, staff: bool) -> None:
            self.is_staff = staff

    staff, public = rf.get("/p/"), rf.get("/p/")
    staff.user, public.user = U(True), U(False)  # type: ignore[attr-defined]
    assert view(staff).content == b"staff"
    assert view(public).content == b"public"
    assert view(staff).content == b"staff"


def test_view_varying_on_cookie_needs_extra(c1: Category) -> None:
    calls = Calls()
    rf = RequestFactory()

    @cached_view_as(Post)
    def view(request: HttpRequest) -> HttpResponse:
        calls()
        response = HttpResponse(request.COOKIES.get("name", ""))
        response["Vary"] = "Cookie"
        return response

    ann, bob = rf.get("/h/"), rf.get("/h/")
    ann.COOKIES["name"], bob.COOKIES["name"] = "ann", "bob"
    assert view(ann).content == b"ann"
    assert view(bob).content == b"bob"
    assert calls.n == 2


def test_class_based_view_and_template_response(c1: Category) -> None:
    from django.template.response import TemplateResponse

    calls = Calls()
    rf = RequestFactory()

    class Page(View):
        def get(self, request: HttpRequest) -> TemplateResponse:
            calls()
            return TemplateResponse(request, "testapp/count.html", {"n": Post.objects.count()})

    view = cached_view_as(Post)(Page.as_view())
    assert view(rf.get("/c/")).content.strip() == b"count=0"
    assert view(rf.get("/c/")).content.strip() == b"count=0"
    assert calls.n == 1
    Post.objects.create(title="a", category=c1)
    assert view(rf.get("/c/")).content.strip() == b"count=1"


def test_uncacheable_sample_runs_uncached(c1: Category) -> None:
    calls = Calls()

    @cached_as(Post.objects.order_by("?"))
    def f() -> int:
        calls()
        return 1

    assert f() == 1
    assert f() == 1
    assert calls.n == 2


# -- review fixes: what must never be shared -----------------------------------------------------


def _through_middleware(view: Any, request: HttpRequest) -> HttpResponse:
    """Run ``view`` behind the session, auth and CSRF middleware, as a site would."""
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.middleware.csrf import CsrfViewMiddleware

    handler = SessionMiddleware(AuthenticationMiddleware(CsrfViewMiddleware(view)))
    return handler(request)  # type: ignore[no-any-return]


def test_view_reading_the_user_is_not_shared_without_extra(c1: Category) -> None:
    from django.contrib.auth.models import User

    rf = RequestFactory()

    @cached_view_as(Post)
    def whoami(request: HttpRequest) -> HttpResponse:
        return HttpResponse(request.user.username or "-")

    ann = User.objects.create_user("ann")
    bob = User.objects.create_user("bob")
    for user in (ann, bob):
        request = rf.get("/me/")
        request.user = user  # what AuthenticationMiddleware's lazy object resolves to
        request._cached_user = user  # type: ignore[attr-defined]
        assert whoami(request).content == user.username.encode()


def test_view_touching_the_session_through_middleware(c1: Category) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    rf = RequestFactory()

    @cached_view_as(Post)
    def greet(request: HttpRequest) -> HttpResponse:
        return HttpResponse(request.session.get("name", "nobody"))

    pages = []
    for name in ("ann", "bob"):
        session = SessionStore()
        session["name"] = name
        session.save()
        request = rf.get("/greet/")
        request.COOKIES["sessionid"] = session.session_key  # type: ignore[index]
        pages.append(_through_middleware(greet, request).content)
    assert pages == [b"ann", b"bob"]


def test_csrf_tokens_and_cookies_are_never_replayed(c1: Category) -> None:
    from django.middleware.csrf import get_token

    calls = Calls()
    rf = RequestFactory()

    @cached_view_as(Post, extra="everyone")
    def form(request: HttpRequest) -> HttpResponse:
        calls()
        return HttpResponse(get_token(request))

    @cached_view_as(Post)
    def sets_cookie(request: HttpRequest) -> HttpResponse:
        calls()
        response = HttpResponse("hi")
        response.set_cookie("seen", "1")
        return response

    for _ in range(2):
        _through_middleware(form, rf.get("/form/"))
        sets_cookie(rf.get("/cookie/"))
    assert calls.n == 4


def test_async_view(c1: Category) -> None:
    calls = Calls()
    rf = RequestFactory()

    @cached_view_as(Post)
    async def view(request: HttpRequest) -> HttpResponse:
        calls()
        return HttpResponse(str(await Post.objects.acount()))

    assert run_async(view(rf.get("/a/"))).content == b"0"
    assert run_async(view(rf.get("/a/"))).content == b"0"
    assert calls.n == 1


def test_views_on_other_hosts_and_other_classes_do_not_share(c1: Category) -> None:
    rf = RequestFactory()

    class A(View):
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("A")

    class B(View):
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("B")

    a, b = cached_view_as(Post)(A.as_view()), cached_view_as(Post)(B.as_view())
    assert a(rf.get("/same/")).content == b"A"
    assert b(rf.get("/same/")).content == b"B"

    @cached_view_as(Post)
    def host(request: HttpRequest) -> HttpResponse:
        return HttpResponse(request.META["HTTP_HOST"])

    assert host(rf.get("/h/", HTTP_HOST="one.example")).content == b"one.example"
    assert host(rf.get("/h/", HTTP_HOST="two.example")).content == b"two.example"


def test_instance_arguments_are_keyed_by_their_values(c1: Category) -> None:
    @cached_as(timeout=60)
    def label(category: Category) -> str:
        return category.title.upper()  # uses the argument, reads nothing

    assert label(c1) == "ONE"
    c1.title = "uno"
    c1.save()
    assert label(Category.objects.get(pk=c1.pk)) == "UNO"


def test_lazy_result_is_evaluated_inside_the_capture(c1: Category) -> None:
    @cached_as(timeout=60)
    def posts() -> Any:
        return Post.objects.filter(category=c1)  # a lazy queryset: pickling evaluates it

    assert [p.title for p in posts()] == []
    Post.objects.create(title="a", category=c1)
    assert [p.title for p in posts()] == ["a"]


def test_evaluated_and_empty_queryset_arguments(c1: Category) -> None:
    calls = Calls()

    @cached_as(timeout=60)
    def count(qs: Any) -> int:
        calls()
        return len(list(qs))

    evaluated = Post.objects.all()
    list(evaluated)
    assert count(evaluated) == 0
    assert count(evaluated) == 0
    assert calls.n == 2  # evaluated querysets are not keyed: uncached
    assert count(Post.objects.none()) == 0
    assert count(Post.objects.none()) == 0
    assert calls.n == 3


def test_arguments_that_print_alike_do_not_share_a_key(c1: Category) -> None:
    """``values()`` and ``values_list()`` run the same SQL; a ``QueryDict`` holds several
    values per key. Neither may hand one call's result to another."""
    from django.http import QueryDict

    Post.objects.create(title="a", category=c1)

    @cached_as(timeout=60)
    def rows(qs: Any) -> list[Any]:
        return list(qs)

    assert rows(Post.objects.values("title")) == [{"title": "a"}]
    assert rows(Post.objects.values_list("title")) == [("a",)]
    assert rows(Post.objects.values_list("title", flat=True)) == ["a"]

    @cached_as(timeout=60)
    def tags(query: QueryDict) -> list[str]:
        return query.getlist("tag")

    assert tags(QueryDict("tag=a&tag=b")) == ["a", "b"]
    assert tags(QueryDict("tag=b")) == ["b"]


def test_zero_timeout_is_never_stored(c1: Category) -> None:
    calls = Calls()

    @cached_as(Post, timeout=0)
    def f() -> int:
        calls()
        return 1

    f()
    f()
    assert calls.n == 2


def test_a_transaction_with_writes_sees_its_own_data(c1: Category) -> None:
    from django.db import transaction

    @cached_as(Post)
    def titles() -> list[str]:
        return [p.title for p in Post.objects.filter(category=c1)]

    @cached_as(timeout=60)
    def count() -> int:
        return Post.objects.filter(category=c1).count()

    assert titles() == []
    assert count() == 0
    with transaction.atomic():
        Post.objects.create(title="a", category=c1)
        assert titles() == ["a"]
        assert count() == 1
    assert titles() == ["a"]
    assert count() == 1


def test_an_async_function_in_a_transaction_with_writes_sees_its_own_data(c1: Category) -> None:
    """Called from a thread whose transaction has written (``async_to_sync`` inside ``atomic``),
    an async function must run, not be served what was cached before the transaction: its ORM
    calls run on that thread and see the transaction's rows."""
    from asgiref.sync import async_to_sync
    from django.db import transaction

    @cached_as(timeout=60)
    async def count() -> int:
        return await Post.objects.filter(category=c1).acount()

    assert async_to_sync(count)() == 0
    assert async_to_sync(count)() == 0  # cached
    with transaction.atomic():
        Post.objects.create(title="a", category=c1)
        assert async_to_sync(count)() == 1
    assert async_to_sync(count)() == 1
