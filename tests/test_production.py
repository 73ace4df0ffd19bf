"""Production behaviours: cache_on_save, switches, prefixes, sizes, degrade on failure."""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import subprocess
import time
from typing import Any

import pytest
import redis
from django.db import transaction
from django.test import override_settings

from freshcache.conf import QueryDescriptor
from freshcache.exceptions import BackendError
from freshcache.store import store
from tests.testapp.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)

ON_SAVE = {
    "testapp.category": {"ops": "all", "timeout": 60, "cache_on_save": True},
    "testapp.author": {"ops": "all", "timeout": 60, "cache_on_save": "name"},
    "testapp.*": {"ops": "all", "timeout": 60},
}


def no_queries(queries: Any, read: Any) -> Any:
    with queries() as q:
        value = read()
    assert q.count == 0, q.context.captured_queries
    return value


@override_settings(FRESHCACHE=ON_SAVE)
def test_cache_on_save_by_pk(queries: Any) -> None:
    category = Category.objects.create(title="one", slug="one")
    got = no_queries(queries, lambda: Category.objects.get(pk=category.pk))
    assert got.title == "one"
    category.title = "uno"
    category.save()
    assert no_queries(queries, lambda: Category.objects.get(pk=category.pk)).title == "uno"


@override_settings(FRESHCACHE=ON_SAVE)
def test_cache_on_save_by_field_and_in_a_transaction(queries: Any) -> None:
    from tests.testapp.models import Author

    with transaction.atomic():
        Author.objects.create(name="Ann", email="a@example.com")
    got = no_queries(queries, lambda: Author.objects.get(name="Ann"))
    assert got.email == "a@example.com"


def test_disabled_is_a_no_op_switchable_per_test(queries: Any) -> None:
    category = Category.objects.create(title="one", slug="one")
    with override_settings(FRESHCACHE_ENABLED=False):
        Category.objects.get(pk=category.pk)
        with queries() as q:
            Category.objects.get(pk=category.pk)
        assert q.count == 1
        assert store.backend.get_many(["fc:g"]) == [None]  # nothing was written
    Category.objects.get(pk=category.pk)
    no_queries(queries, lambda: Category.objects.get(pk=category.pk))


def test_values_over_the_size_limit_are_not_cached(
    queries: Any, caplog: pytest.LogCaptureFixture
) -> None:
    category = Category.objects.create(title="x" * 50, slug="one")
    with override_settings(FRESHCACHE_MAX_VALUE_SIZE=40), caplog.at_level(logging.DEBUG):
        assert Category.objects.get(pk=category.pk).title == "x" * 50
        with queries() as q:
            Category.objects.get(pk=category.pk)
        assert q.count == 1
    assert "over the limit" in caplog.text


# -- prefixes -------------------------------------------------------------------------------

tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="a")


def tenant_prefix(query: QueryDescriptor) -> str:
    assert query.db == "default" and query.dbs == ("default",)
    return f"t-{tenant.get()}:"


@override_settings(FRESHCACHE_PREFIX="tests.test_production.tenant_prefix")
def test_callable_prefix_separates_tenants_and_invalidation_follows(queries: Any) -> None:
    category = Category.objects.create(title="one", slug="one")
    assert Category.objects.get(pk=category.pk).title == "one"
    no_queries(queries, lambda: Category.objects.get(pk=category.pk))
    token = tenant.set("b")
    try:
        with queries() as q:
            Category.objects.get(pk=category.pk)  # tenant b has its own entries
        assert q.count == 1
        Category.objects.filter(pk=category.pk).update(title="b-write")  # b's prefix
    finally:
        tenant.reset(token)
    # The write went through tenant b's prefix: tenant a's entry is a different namespace,
    # which is what schema-per-tenant setups want (each tenant its own rows).
    assert store.backend.get_many(["t-a:g"])[0] is not None


@override_settings(FRESHCACHE_PREFIX="tests.test_production.tenant_prefix")
def test_a_read_remembered_under_one_tenant_is_keyed_for_the_next(queries: Any) -> None:
    """The process remembers each statement's keys (general path and chains); they carry the
    prefix of the tenant that read first. Without the check, tenant b would read tenant a's
    entries, which b's writes (under b's prefix) never invalidate."""
    category = Category.objects.create(title="one", slug="one")
    Post.objects.create(title="p", category=category)
    reads: dict[str, Any] = {
        "values_list": lambda: list(Category.objects.filter(slug="one").values_list("title")),
        "count": lambda: Category.objects.filter(title="one").count(),
        "fetch": lambda: [c.title for c in Category.objects.filter(slug="one")],
        "chain fetch": lambda: [c.title for c in Category.objects.filter(pk=category.pk)[:5]],
        "join": lambda: [p.title for p in Post.objects.filter(category__title="one")],
    }
    for read in reads.values():
        read()
        read()  # the chains learn on their first read and use the memo from the second
        no_queries(queries, read)
    token = tenant.set("b")
    try:
        for read in reads.values():
            read()
            read()
        Category.objects.filter(pk=category.pk).update(title="b-write")  # b's prefix
        # (not read under FRESHCACHE_ENABLED=False: changing settings empties the memos)
        truth = {"values_list": [("b-write",)], "count": 0, "fetch": ["b-write"],
                 "chain fetch": ["b-write"], "join": []}  # fmt: skip
        for name, read in reads.items():
            assert read() == truth[name], f"{name} read tenant a's entry"
    finally:
        tenant.reset(token)


# -- degrade on failure ------------------------------------------------------------------------


@pytest.mark.system
def test_degrade_survives_an_outage_without_stale_reads(
    own_redis: tuple[str, subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    url, process = own_redis
    category = Category.objects.create(title="one", slug="one")
    with override_settings(
        FRESHCACHE_BACKEND="redis", FRESHCACHE_REDIS=url, FRESHCACHE_DEGRADE_ON_FAILURE=True
    ):
        assert [p.title for p in Post.objects.filter(category=category)] == []
        Post.objects.create(title="a", category=category)
        assert [p.title for p in Post.objects.filter(category=category)] == ["a"]  # cached
        os.kill(process.pid, signal.SIGSTOP)  # Redis unreachable, its data intact
        with caplog.at_level(logging.WARNING, logger="freshcache"):
            Post.objects.create(title="b", category=category)  # invalidation cannot go out
            assert [p.title for p in Post.objects.filter(category=category)] == ["a", "b"]
            Post.objects.filter(title="a").update(title="aa")
            assert [p.title for p in Post.objects.filter(category=category)] == ["aa", "b"]
        assert caplog.text.count("unavailable") == 1, "one warning per outage"
        os.kill(process.pid, signal.SIGCONT)  # back, still holding the old cached rows
        store._retry_at = 0.0  # do not wait for the next retry slot
        assert [p.title for p in Post.objects.filter(category=category)] == ["aa", "b"]
        assert [p.title for p in Post.objects.filter(category=category)] == ["aa", "b"]


@pytest.mark.system
def test_without_degrade_an_outage_is_a_clear_error(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = own_redis
    category = Category.objects.create(title="one", slug="one")
    process.terminate()
    process.wait(10)
    with override_settings(FRESHCACHE_BACKEND="redis", FRESHCACHE_REDIS=url):
        with pytest.raises(BackendError):
            list(Post.objects.filter(category=category))
        with override_settings(FRESHCACHE_DEGRADE_ON_FAILURE=True):
            assert list(Post.objects.filter(category=category)) == []


@pytest.mark.system
def test_degrade_through_a_killed_and_restarted_redis(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = own_redis
    category = Category.objects.create(title="one", slug="one")
    with override_settings(
        FRESHCACHE_BACKEND="redis", FRESHCACHE_REDIS=url, FRESHCACHE_DEGRADE_ON_FAILURE=True
    ):
        Post.objects.create(title="a", category=category)
        assert [p.title for p in Post.objects.filter(category=category)] == ["a"]
        process.kill()
        process.wait(10)
        for i in range(5):  # the application keeps serving and writing
            Post.objects.create(title=f"w{i}", category=category)
            assert len(list(Post.objects.filter(category=category))) == i + 2
        port = url.split(":")[2].split("/")[0]
        restarted = subprocess.Popen(
            [
                "redis-server",
                "--port",
                port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=int(port))
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            store._retry_at = 0.0
            titles = ["a", "w0", "w1", "w2", "w3", "w4"]
            assert [p.title for p in Post.objects.filter(category=category)] == titles
            assert [p.title for p in Post.objects.filter(category=category)] == titles
            Post.objects.filter(title="a").update(title="b")
            assert Post.objects.filter(category=category).first().title == "b"  # type: ignore[union-attr]
        finally:
            restarted.terminate()
            restarted.wait(10)


@pytest.mark.system
def test_breaker_closes_under_steady_traffic(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Refused calls must not push the next try back: the process recovers within a slot."""
    url, process = own_redis
    category = Category.objects.create(title="one", slug="one")
    with override_settings(
        FRESHCACHE_BACKEND="redis", FRESHCACHE_REDIS=url, FRESHCACHE_DEGRADE_ON_FAILURE=True
    ):
        list(Post.objects.filter(category=category))
        os.kill(process.pid, signal.SIGSTOP)
        for _ in range(5):
            list(Post.objects.filter(category=category))
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 3
        while not store.healthy():
            assert time.monotonic() < deadline, "the breaker never closed"
            list(Post.objects.filter(category=category))
            time.sleep(0.2)


@pytest.mark.system
def test_local_get_after_a_partition_is_not_stale(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    from tests.testapp.models import Author

    url, process = own_redis
    ann = Author.objects.create(name="Ann")
    with override_settings(
        FRESHCACHE={"testapp.author": {"ops": "all", "timeout": 60, "local_get": True}},
        FRESHCACHE_BACKEND="redis",
        FRESHCACHE_REDIS=url,
        FRESHCACHE_DEGRADE_ON_FAILURE=True,
    ):
        from freshcache.local import local_gets

        deadline = time.monotonic() + 5
        while not local_gets._entries:  # cached in process memory
            assert Author.objects.get(pk=ann.pk).name == "Ann"
            assert time.monotonic() < deadline
        os.kill(process.pid, signal.SIGSTOP)  # the connection stays open, nothing answers
        try:
            Author.objects.filter(pk=ann.pk).update(name="Anna")  # its invalidation is owed
            assert Author.objects.get(pk=ann.pk).name == "Anna"
        finally:
            os.kill(process.pid, signal.SIGCONT)
        store._retry_at = 0.0
        assert Author.objects.get(pk=ann.pk).name == "Anna"
        assert Author.objects.get(pk=ann.pk).name == "Anna"
