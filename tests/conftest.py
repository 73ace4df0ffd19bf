"""Shared fixtures: a clean cache per test, real backends, query counting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from django.db import connection, connections, models, transaction
from django.test.utils import CaptureQueriesContext

from freshcache.backends import get_backend, reset_backend
from freshcache.backends.locmem import LocMemBackend
from freshcache.backends.redis import RedisBackend
from freshcache.store import store

REDIS_URL = os.environ.get("FRESHCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Django 6.1's database-level on_delete: its tests are collected where the options exist.
collect_ignore = [] if hasattr(models, "DB_CASCADE") else ["test_db_on_delete.py"]
#: GeneratedField (Django 5.0+) likewise.
if not hasattr(models, "GeneratedField"):
    collect_ignore.append("test_generated_fields.py")
#: CompositePrimaryKey (Django 5.2+) likewise.
if not hasattr(models, "CompositePrimaryKey"):
    collect_ignore.append("test_composite_pk.py")


def flush_test_redis() -> None:
    """Tests own their private Redis; the library itself never flushes a database."""
    redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.fixture(autouse=True)
def clean_cache() -> Iterator[None]:
    backend = get_backend()
    if isinstance(backend, LocMemBackend):
        backend.clear()
    elif isinstance(backend, RedisBackend):
        backend.client.flushdb()
    store.forget()
    yield
    reset_backend()


@pytest.fixture(params=["locmem", "redis"])
def any_backend(request: pytest.FixtureRequest) -> Iterator[LocMemBackend | RedisBackend]:
    """Each engine in turn, cleared: the contract suite runs on all of them."""
    if request.param == "locmem":
        backend: LocMemBackend | RedisBackend = LocMemBackend(name="contract")
        backend.clear()
    else:
        flush_test_redis()
        backend = RedisBackend(redis.Redis.from_url(REDIS_URL))
    yield backend
    backend.close()


class Queries:
    """Counts the SQL a block runs on a connection."""

    def __init__(self, alias: str = "default") -> None:
        self.context = CaptureQueriesContext(connections[alias])

    def __enter__(self) -> Queries:
        self.context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.context.__exit__(*exc)

    @property
    def count(self) -> int:
        return len(self.context.captured_queries)

    @property
    def selects(self) -> int:
        return sum(
            1
            for q in self.context.captured_queries
            if q["sql"].lstrip().upper().startswith("SELECT")
        )


@pytest.fixture
def queries() -> type[Queries]:
    return Queries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_redis(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server this test may stop, freeze and restart."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="freshcache-redis-")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", workdir,
               *getattr(request, "param", [])]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0?socket_timeout=0.3&socket_connect_timeout=0.3", process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def run_async(coroutine: Any) -> Any:
    """``asyncio.run`` that closes the database connections the async ORM opened in its worker
    thread, so that the test database can be dropped at the end of the run."""
    from asgiref.sync import sync_to_async

    async def main() -> Any:
        try:
            return await coroutine
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(main())


@contextlib.contextmanager
def compiled_by(klass: Any) -> Iterator[list[str]]:
    """The SQL of every statement ``klass.as_sql`` compiles inside the block (Django's own
    method runs; the list only watches)."""
    seen: list[str] = []
    original = klass.as_sql

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        sql, params = original(self, *args, **kwargs)
        seen.append(sql)
        return sql, params

    klass.as_sql = spy
    try:
        yield seen
    finally:
        klass.as_sql = original


@pytest.fixture
def compiles() -> Iterator[list[str]]:
    """The SQL of every statement compiled while the test runs (the chain tests' witness that a
    read skipped the compiler)."""
    from django.db.models.sql.compiler import SQLCompiler

    with compiled_by(SQLCompiler) as seen:
        yield seen


@pytest.fixture
def updates_compiled() -> Iterator[list[str]]:
    """The UPDATE statements Django's compiler builds while the test runs (the fast save's
    witness that a save skipped it)."""
    from django.db.models.sql.compiler import SQLUpdateCompiler

    with compiled_by(SQLUpdateCompiler) as seen:
        yield seen


@pytest.fixture
def blog() -> dict[str, Any]:
    """Two categories, an author, eight posts with varied scores, prices and authors, and a
    comment on each of the first four."""
    from decimal import Decimal

    from tests.testapp.models import Author, Category, Comment, Post

    news = Category.objects.create(title="News", slug="news")
    misc = Category.objects.create(title="Misc", slug="misc")
    ann = Author.objects.create(name="Ann")
    posts = [
        Post.objects.create(title=f"post {i}", category=news if i % 2 else misc, score=i,
                            author=ann if i % 3 else None, price=Decimal(f"{i}.25"))
        for i in range(8)
    ]  # fmt: skip
    for post in posts[:4]:
        Comment.objects.create(post=post, text=f"c{post.score}")
    return {"news": news, "misc": misc, "ann": ann, "posts": posts}


T = TypeVar("T")


def start_elsewhere(func: Callable[[], T]) -> tuple[threading.Thread, list[T], list[BaseException]]:
    """Start ``func`` on another thread, and so on a connection of its own (closed after):
    the thread, and the lists its result or its error lands in."""
    seen: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            seen.append(func())
        except BaseException as exc:
            failed.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, seen, failed


def on_another_connection(func: Callable[[], T]) -> T:
    """``func``'s result, run on another thread and so on a connection of its own (closed
    after); its error is raised here."""
    thread, seen, failed = start_elsewhere(func)
    thread.join(10)
    if failed:
        raise failed[0]
    return seen[0]


@contextlib.contextmanager
def snapshot_after(write: Callable[[], Any]) -> Iterator[None]:
    """Inside a REPEATABLE READ transaction (PostgreSQL) whose snapshot was taken before
    ``write`` committed on another thread's connection, in autocommit."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT 1")  # the snapshot is taken here
        on_another_connection(write)
        yield
