"""local_get: gets served from process memory, invalidated here at once and elsewhere by pub/sub."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
import redis
from django.test import override_settings

from freshcache.backends import get_backend
from freshcache.backends.redis import RedisBackend
from freshcache.local import CHANNEL, LocalGets, local_gets
from freshcache.store import store
from tests.conftest import REDIS_URL, snapshot_after
from tests.local_worker import run
from tests.testapp.models import Author

PROFILES = {"testapp.author": {"ops": "all", "timeout": 60, "local_get": True}, "testapp.*": {}}


def wait_listening() -> None:
    deadline = time.monotonic() + 10
    while not local_gets._ready():
        assert time.monotonic() < deadline, "the channel never subscribed"
        time.sleep(0.01)


def kept_in_memory(author: Author) -> None:
    """Read ``author`` until this process keeps it (the first reads may race the invalidation
    of the write that made it)."""
    deadline = time.monotonic() + 5
    while not local_gets._entries:
        assert Author.objects.get(pk=author.pk).name == author.name
        assert time.monotonic() < deadline


@pytest.mark.django_db(transaction=True)
@override_settings(FRESHCACHE=PROFILES)
def test_get_served_from_process_memory_and_invalidated_on_write(queries: Any) -> None:
    wait_listening()
    ann = Author.objects.create(name="Ann")
    kept_in_memory(ann)
    backend = get_backend()
    # Wipe the shared cache behind our back: a memory hit needs neither it nor the database.
    if isinstance(backend, RedisBackend):
        backend.client.flushdb()
    else:
        backend.clear()  # type: ignore[attr-defined]
    with queries() as q:
        assert Author.objects.get(pk=ann.pk).name == "Ann"
    assert q.count == 0
    Author.objects.filter(pk=ann.pk).update(name="Anna")  # a write in this process
    assert Author.objects.get(pk=ann.pk).name == "Anna"


@pytest.mark.django_db(transaction=True)
@override_settings(FRESHCACHE=PROFILES)
def test_a_write_after_the_registry_was_evicted_reaches_local_entries(queries: Any) -> None:
    """A writer that finds no registry invalidates no granular stamp (the table's values in the
    backend are invalid already), but entries in process memory were validated against the
    registry before it went: unless its loss is published, they are served for good."""
    wait_listening()
    ann = Author.objects.create(name="Ann")
    kept_in_memory(ann)
    backend = get_backend()
    registry = f"fc:r:{Author._meta.db_table}"
    if isinstance(backend, RedisBackend):
        assert backend.client.delete(registry) == 1  # evicted
    else:
        backend.delete_many([registry])
    store._schemes.clear()  # the writer is a process that never saw the registry
    Author.objects.filter(pk=ann.pk).update(name="Anna")
    with queries() as q:
        assert Author.objects.get(pk=ann.pk).name == "Anna"
    assert q.count == 1


@pytest.mark.django_db(transaction=True)
@override_settings(FRESHCACHE=PROFILES)
@pytest.mark.parametrize("loss", ["evicted", "flushed"])
def test_a_registry_made_anew_by_a_reader_drops_local_entries(loss: str, queries: Any) -> None:
    """After the registry is lost, a read under another scheme makes a new one listing only
    that scheme; writers then delete none of the stamps the entries in memory were validated
    against, so the entries must go when the new registry is made, in every process."""
    wait_listening()
    ann = Author.objects.create(name="Ann")
    kept_in_memory(ann)
    backend = get_backend()
    if loss == "evicted":
        backend.delete_many([f"fc:r:{Author._meta.db_table}"])
    elif isinstance(backend, RedisBackend):
        backend.client.flushdb()
    else:
        backend.clear()  # type: ignore[attr-defined]
    store._schemes.clear()  # the writer below knows only the registry made anew
    assert list(Author.objects.filter(name="Bob")) == []  # registers the "name" scheme only
    Author.objects.filter(pk=ann.pk).update(name="Anna")
    with queries() as q:
        assert Author.objects.get(pk=ann.pk).name == "Anna"
    assert q.count == 1


@pytest.mark.django_db(transaction=True)
@override_settings(FRESHCACHE=PROFILES)
def test_only_gets_are_local(queries: Any) -> None:
    wait_listening()
    Author.objects.create(name="Ann")
    list(Author.objects.all())
    assert local_gets._entries == {} or all(":q:" in k for k in local_gets._entries)
    before = len(local_gets._entries)
    list(Author.objects.filter(name="Ann"))
    assert len(local_gets._entries) == before


def test_bounded_lru() -> None:
    lru = LocalGets(max_entries=2)
    lru._listening = True
    lru._ready = lambda: True  # type: ignore[method-assign]
    lru.put("a", 1, ["s1"], lru.seq)
    lru.put("b", 2, ["s2"], lru.seq)
    lru.get("a")
    lru.put("c", 3, ["s3"], lru.seq)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    lru.invalidate(["s3"])
    assert lru.get("c") is None
    assert lru._index == {"s1": {"a"}}


def test_a_fill_racing_an_invalidation_is_dropped() -> None:
    lru = LocalGets()
    lru._ready = lambda: True  # type: ignore[method-assign]
    seq = lru.seq  # taken before the backend read
    lru.invalidate(["s1"])  # arrives while the read is in flight
    lru.put("a", "old rows", ["s1"], seq)
    assert lru.get("a") is None


@pytest.mark.system
def test_other_processes_drop_their_entries_through_the_channel() -> None:
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    child = context.Process(target=run, args=(REDIS_URL, ready, results))
    child.start()
    try:
        assert results.get(timeout=30) == ("row",)
        assert ready.wait(10)
        import msgpack

        message = msgpack.packb([b"another process", ["stamp-b"]])
        redis.Redis.from_url(REDIS_URL).publish(CHANNEL, message)
        assert results.get(timeout=15) == "dropped"
    finally:
        child.join(20)
    assert child.exitcode == 0


@pytest.mark.django_db(transaction=True)
@override_settings(FRESHCACHE=PROFILES)
def test_rows_read_inside_a_snapshot_are_not_kept_in_memory() -> None:
    """A REPEATABLE READ transaction reads rows older than a write committed meanwhile; the
    cache stores nothing then, and neither may process memory, or the old row outlives it."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return  # SQLite has no such level; its snapshot rule is in test_transactions
    wait_listening()
    ann = Author.objects.create(name="Ann")

    with snapshot_after(lambda: Author.objects.filter(pk=ann.pk).update(name="Anna")):
        assert Author.objects.get(pk=ann.pk).name == "Ann"  # the snapshot's answer
    assert Author.objects.get(pk=ann.pk).name == "Anna"
