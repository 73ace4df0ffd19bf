"""The dog-pile lock: one computes, the others wait for its result instead of all computing."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis
from django.db import connection, connections

from freshcache.backends.base import Backend
from tests.conftest import REDIS_URL
from tests.lock_worker import run
from tests.test_store import expire_now
from tests.testapp.models import Category, Post


def test_acquire_is_exclusive_and_names_the_holder(any_backend: Backend) -> None:
    acquired, holder, left = any_backend.lock_acquire("L{a}", b"t1", 5000)
    # The time left is read after the SET: a millisecond may have passed in between.
    assert (acquired, holder) == (True, b"t1") and 4000 < left <= 5000
    acquired, holder, left = any_backend.lock_acquire("L{a}", b"t2", 5000)
    assert (acquired, holder) == (False, b"t1")
    assert 0 < left <= 5000


def test_release_wakes_every_waiter(any_backend: Backend) -> None:
    any_backend.lock_acquire("L{b}", b"t1", 5000)
    woke: list[bool] = []
    waiters = [
        threading.Thread(target=lambda: woke.append(any_backend.lock_wait("L{b}", b"t1", 5)))
        for _ in range(3)
    ]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    any_backend.lock_release("L{b}", b"t1")
    for waiter in waiters:
        waiter.join()
    assert woke == [True, True, True]
    assert time.monotonic() - started < 2, "waiters were woken, not timed out"
    assert any_backend.lock_acquire("L{b}", b"t2", 5000)[0], "the lock is free again"


def test_wait_is_bounded(any_backend: Backend) -> None:
    any_backend.lock_acquire("L{c}", b"t1", 5000)
    started = time.monotonic()
    assert any_backend.lock_wait("L{c}", b"t1", 0.2) is False
    assert time.monotonic() - started < 2


def test_a_crashed_holder_blocks_no_one_past_its_ttl(any_backend: Backend) -> None:
    any_backend.lock_acquire("L{d}", b"crashed", 60_000)
    expire_now(any_backend, "L{d}")  # its TTL ran out; it never released
    assert any_backend.lock_acquire("L{d}", b"next", 5000)[0]


def test_release_by_a_late_holder_keeps_the_new_lock(any_backend: Backend) -> None:
    any_backend.lock_acquire("L{e}", b"old", 5000)
    expire_now(any_backend, "L{e}")
    any_backend.lock_acquire("L{e}", b"new", 5000)
    any_backend.lock_release("L{e}", b"old")  # the old holder finishes late
    assert any_backend.lock_acquire("L{e}", b"third", 5000)[1] == b"new"


@pytest.mark.django_db(transaction=True)
def test_concurrent_misses_run_one_query(settings: Any) -> None:
    """Eight threads (own connections) miss the same query at once: one reads the database."""
    category = Category.objects.create(title="c", slug="c")
    Post.objects.create(title="a", category=category)
    selects: list[str] = []
    lock = threading.Lock()

    def slow_select(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT") and "testapp_post" in sql:
            with lock:
                selects.append(sql)
            time.sleep(0.3)
        return execute(sql, params, many, context)

    barrier = threading.Barrier(8)
    results: list[list[str]] = []

    def worker() -> None:
        try:
            connection.execute_wrappers.append(slow_select)
            barrier.wait()
            qs = Post.objects.filter(category=category).cache(lock=True)
            results.append([p.title for p in qs])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [["a"]] * 8
    assert len(selects) == 1


@pytest.mark.system
def test_processes_share_one_computation() -> None:
    """Separate OS processes, one Redis: the function body runs once."""
    client = redis.Redis.from_url(REDIS_URL)
    client.delete("locktest:counter")
    for key in client.scan_iter("locktest:*"):
        client.delete(key)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(6)
    results = context.Queue()
    processes = [
        context.Process(target=run, args=(REDIS_URL, "locktest:counter", barrier, results))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    values = [results.get(timeout=5) for _ in processes]
    assert values == [1] * 6
    assert int(client.get("locktest:counter") or 0) == 1
