"""The time-based cache, template fragments (Django and Jinja2) and invalidate_fragment."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jinja2
import pytest
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse
from django.template import Context, Template
from django.test import RequestFactory

from freshcache import (
    CacheMiss,
    FileCache,
    cache,
    cached,
    cached_as,
    cached_view,
    invalidate_fragment,
)
from freshcache.signals import cache_read
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


class Calls:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


@pytest.fixture(params=["backend", "files"])
def any_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return cache if request.param == "backend" else FileCache(tmp_path / "fc")


def test_get_set_delete(any_cache: Any) -> None:
    with pytest.raises(CacheMiss):
        any_cache.get("k")
    any_cache.set("k", None, 60)  # None is a value, not a miss
    assert any_cache.get("k") is None
    any_cache.set("k", {"a": [1, 2]}, 60)
    assert any_cache.get("k") == {"a": [1, 2]}
    any_cache.delete("k")
    with pytest.raises(CacheMiss):
        any_cache.get("k")


def test_cached_decorator(any_cache: Any) -> None:
    calls = Calls()

    @any_cache.cached(timeout=60, extra="v1")
    def compute(x: int) -> int:
        return x * 100 + calls()

    assert compute(1) == 101
    assert compute(1) == 101
    assert compute(2) == 202
    compute.invalidate(1)  # type: ignore[attr-defined]
    assert compute(1) == 103
    assert compute.key(1) != compute.key(2)  # type: ignore[attr-defined]
    # The key is a string for any_cache.get(), with django-cacheops' methods on it too.
    key = compute.key(2)  # type: ignore[attr-defined]
    assert any_cache.get(key) == key.get() == 202
    key.delete()
    assert compute(2) == 204
    key.set(42)
    assert compute(2) == 42 == any_cache.get(str(key))


def test_cached_view(any_cache: Any) -> None:
    calls = Calls()
    rf = RequestFactory()

    @any_cache.cached_view(timeout=60)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(calls()))

    assert view(rf.get("/a/")).content == b"1"
    assert view(rf.get("/a/")).content == b"1"
    assert view(rf.get("/a/?x=1")).content == b"2"
    assert view(rf.post("/a/")).content == b"3"
    # cacheops' invalidate() takes the request, or its absolute URI (with or without Host).
    view.invalidate(rf.get("/a/"))  # type: ignore[attr-defined]
    assert view(rf.get("/a/")).content == b"4"
    view.invalidate(rf.get("/a/").build_absolute_uri())  # type: ignore[attr-defined]
    assert view(rf.get("/a/")).content == b"5"
    hosted = rf.get("/a/?x=1", HTTP_HOST="example.com")
    assert view(hosted).content == b"6"
    assert view(hosted).content == b"6"
    view.invalidate("https://example.com/a/?x=1")  # type: ignore[attr-defined]
    assert view(hosted).content == b"7"
    # A URI cannot say whether its request sent Host: the entry without one goes too.
    assert view(rf.get("/a/?x=1")).content == b"8"


def test_expired_entry_is_a_miss(tmp_path: Path) -> None:
    files = FileCache(tmp_path)
    files.set("k", 1, 60)
    path = next(tmp_path.glob("*/*"))
    path.write_bytes(b"1.0\n" + path.read_bytes().split(b"\n", 1)[1])  # expired in 1970
    with pytest.raises(CacheMiss):
        files.get("k")


def test_cleanfilecache_command(tmp_path: Path) -> None:
    files = FileCache(tmp_path)
    files.set("old", 1, 60)
    files.set("new", 2, 60)
    old = files._file("old")
    old.write_bytes(b"1.0\n" + old.read_bytes().split(b"\n", 1)[1])
    call_command("cleanfilecache", str(tmp_path))
    assert not old.exists()
    assert files.get("new") == 2


def test_top_level_cached_and_async() -> None:
    calls = Calls()

    @cached(timeout=60)
    async def slow(x: int) -> int:
        return x + calls()

    assert asyncio.run(slow(1)) == 2
    assert asyncio.run(slow(1)) == 2
    assert calls.n == 1


def test_cached_view_top_level() -> None:
    calls = Calls()

    @cached_view(timeout=60)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(str(calls()))

    rf = RequestFactory()
    assert view(rf.get("/b/")).content == view(rf.get("/b/")).content == b"1"


def test_cache_read_signal_for_time_based() -> None:
    seen: list[bool] = []

    def receiver(sender: Any, func: Any, hit: bool, **kwargs: Any) -> None:
        seen.append(hit)

    @cached(timeout=60)
    def f() -> int:
        return 1

    cache_read.connect(receiver)
    try:
        f()
        f()
    finally:
        cache_read.disconnect(receiver)
    assert seen == [False, True]


# -- Django templates ---------------------------------------------------------------------------


def render(source: str, **context: Any) -> str:
    return Template("{% load freshcache %}" + source).render(Context(context)).strip()


def test_cached_fragment_and_invalidate_fragment() -> None:
    calls = Calls()
    source = "{% cached 60 'side' who %}{{ calls }}{% endcached %}"
    assert render(source, calls=calls, who="ann") == "1"
    assert render(source, calls=calls, who="ann") == "1"
    assert render(source, calls=calls, who="bob") == "2"
    invalidate_fragment("side", "ann")
    assert render(source, calls=calls, who="ann") == "3"
    assert render(source, calls=calls, who="bob") == "2"


def test_cached_as_fragment_invalidated_by_a_model_write() -> None:
    c1 = Category.objects.create(title="one", slug="one")
    source = (
        "{% cached_as posts 60 'posts' %}{% for p in posts %}{{ p.title }};{% endfor %}"
        "{% endcached_as %}"
    )
    posts = Post.objects.filter(category=c1)
    assert render(source, posts=posts) == ""
    Post.objects.create(title="a", category=c1)
    assert render(source, posts=Post.objects.filter(category=c1)) == "a;"
    Post.objects.create(title="b", category=c1)
    assert render(source, posts=Post.objects.filter(category=c1)) == "a;b;"


def test_cached_as_fragment_invalidate_fragment() -> None:
    calls = Calls()
    source = "{% cached_as posts 60 'n' %}{{ calls }}{% endcached_as %}"
    assert render(source, posts=Post.objects.all(), calls=calls) == "1"
    assert render(source, posts=Post.objects.all(), calls=calls) == "1"
    invalidate_fragment("n")
    assert render(source, posts=Post.objects.all(), calls=calls) == "2"


def test_decorator_tag() -> None:
    from django.template import engines

    from freshcache.templatetags.freshcache import register

    calls = Calls()

    @register.decorator_tag
    def my_cached(timeout: int, name: str) -> Any:
        return cached_as(Post, timeout=timeout, extra=name)

    engine = engines["django"].engine
    engine.template_libraries["freshcache"] = register
    template = engine.from_string(
        "{% load freshcache %}{% my_cached 60 'x' %}{{ c }}{% endmy_cached %}"
    )
    assert template.render(Context({"c": calls})).strip() == "1"
    assert template.render(Context({"c": calls})).strip() == "1"
    Category.objects.create(title="z", slug="z")
    Post.objects.create(title="a", category=Category.objects.get(slug="z"))
    assert template.render(Context({"c": calls})).strip() == "2"


def test_decorator_tag_with_context_and_keywords() -> None:
    """cacheops' ``decorator_tag(takes_context=True)``: the factory gets the context first,
    and the tag's arguments may be named."""
    from django.template import engines

    from freshcache.templatetags.freshcache import register

    calls = Calls()

    @register.decorator_tag(takes_context=True)
    def per_user(context: Any, timeout: int, name: str = "u") -> Any:
        return cached_as(Post, timeout=timeout, extra=(name, context["who"]))

    engine = engines["django"].engine
    engine.template_libraries["freshcache"] = register
    template = engine.from_string(
        "{% load freshcache %}{% per_user timeout=60 %}{{ c }}{% endper_user %}"
    )
    assert template.render(Context({"c": calls, "who": "ann"})).strip() == "1"
    assert template.render(Context({"c": calls, "who": "ann"})).strip() == "1"
    assert template.render(Context({"c": calls, "who": "bob"})).strip() == "2"


def test_bad_tag_usage_is_a_syntax_error() -> None:
    from django.template import TemplateSyntaxError

    with pytest.raises(TemplateSyntaxError, match="fragment_name"):
        render("{% cached 60 %}x{% endcached %}")
    with pytest.raises(TemplateSyntaxError, match="queryset"):
        render("{% cached_as timeout=60 fragment_name='x' %}x{% endcached_as %}")
    with pytest.raises(TemplateSyntaxError, match="unexpected keyword argument 'nam'"):
        render("{% cached 60 'x' nam='y' %}x{% endcached %}")
    with pytest.raises(TemplateSyntaxError, match="after a named one"):
        render("{% cached timeout=60 'x' %}x{% endcached %}")
    with pytest.raises(TemplateSyntaxError, match="given twice"):
        render("{% cached 60 fragment_name='x' fragment_name='y' %}x{% endcached %}")


def test_tags_take_keyword_arguments_as_in_cacheops() -> None:
    """``{% cached timeout=60 fragment_name='b' %}`` is the positional form's fragment."""
    calls = Calls()
    positional = "{% cached 60 'b' who %}{{ calls }}{% endcached %}"
    named = "{% cached timeout=60 fragment_name='b' %}{{ calls }}{% endcached %}"
    assert render(named, calls=calls) == "1"
    assert render(named, calls=calls) == "1"
    assert render(positional, calls=calls, who="ann") == "2"
    invalidate_fragment("b")
    assert render(named, calls=calls) == "3"
    source = "{% cached_as posts fragment_name='n' timeout=60 %}{{ calls }}{% endcached_as %}"
    assert render(source, posts=Post.objects.all(), calls=calls) == "4"
    assert render(source, posts=Post.objects.all(), calls=calls) == "4"
    Post.objects.create(title="a", category=Category.objects.create(title="c", slug="c"))
    assert render(source, posts=Post.objects.all(), calls=calls) == "5"


# -- Jinja2 -----------------------------------------------------------------------------------


@pytest.fixture
def env() -> jinja2.Environment:
    return jinja2.Environment(extensions=["freshcache.jinja2.cache"])


def test_jinja2_cached(env: jinja2.Environment) -> None:
    calls = Calls()
    template = env.from_string(
        "{% cached timeout=60, name='j', extra=who %}{{ c() }}{% endcached %}"
    )
    assert template.render(c=calls, who="a") == "1"
    assert template.render(c=calls, who="a") == "1"
    assert template.render(c=calls, who="b") == "2"
    invalidate_fragment("j", "a")
    assert template.render(c=calls, who="a") == "3"


def test_jinja2_cached_as(env: jinja2.Environment) -> None:
    c1 = Category.objects.create(title="one", slug="one")
    template = env.from_string(
        "{% cached_as posts, timeout=60, name='posts' %}{% for p in posts %}{{ p.title }};"
        "{% endfor %}{% endcached_as %}"
    )
    assert template.render(posts=Post.objects.filter(category=c1)) == ""
    Post.objects.create(title="a", category=c1)
    assert template.render(posts=Post.objects.filter(category=c1)) == "a;"


def test_jinja2_rejects_unknown_arguments(env: jinja2.Environment) -> None:
    with pytest.raises(jinja2.TemplateSyntaxError, match="unknown argument"):
        env.from_string("{% cached timout=60, name='x' %}x{% endcached %}")


def test_jinja2_fragments_of_templates_without_a_name(env: jinja2.Environment) -> None:
    """``from_string()`` templates: the fragment is named after the source's digest and its
    line, so two templates never share one, and the same source always does."""
    calls = Calls()
    one = "Hello, {% cached %}{{ c() }}{% endcached %}"
    other = "Bye, {% cached %}{{ c() }}{% endcached %}"
    assert env.from_string(one).render(c=calls) == "Hello, 1"
    assert env.from_string(one).render(c=calls) == "Hello, 1"
    assert env.from_string(other).render(c=calls) == "Bye, 2"
    assert env.from_string(other).render(c=calls) == "Bye, 2"


def test_jinja2_named_templates_name_their_fragments(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text("{% cached timeout=60 %}{{ c() }}{% endcached %}")
    (tmp_path / "b.html").write_text("{% cached timeout=60 %}{{ c() }}{% endcached %}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(tmp_path), extensions=["freshcache.jinja2.cache"]
    )
    calls = Calls()
    assert env.get_template("a.html").render(c=calls) == "1"
    assert env.get_template("b.html").render(c=calls) == "2"  # not a's fragment
    assert env.get_template("a.html").render(c=calls) == "1"
