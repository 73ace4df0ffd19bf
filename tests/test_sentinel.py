"""Sentinel: a failover must not resurrect stale data.

Replication is asynchronous: a stamp deletion the old primary acknowledged can be missing on the
replica Sentinel promotes. The store notices the new primary (its run id, asked as connections
open) and treats every value cached before as invalid. The first tests drive that logic step by
step on an in-process backend whose "failover" restores a snapshot taken before a deletion; the
last runs a real failover (one primary, one replica, three sentinels from scripts/services.sh)
during a read/write workload of separate processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import override_settings
from redis.sentinel import Sentinel

from freshcache.backends.locmem import LocMemBackend
from freshcache.backends.redis import RedisBackend, make_client
from freshcache.exceptions import BackendError
from freshcache.store import Plan, Store, TableChange
from tests.test_concurrency import database, race

PORTS = os.environ.get("FRESHCACHE_TEST_SENTINEL_PORTS", "26379").split()
SERVICE = os.environ.get("FRESHCACHE_TEST_SENTINEL_SERVICE", "mymaster")
P = "t:"
CAT3 = {"post": frozenset({(("category_id", 3),)})}
__all__ = ["database"]  # the fixture of tests/test_concurrency.py, used by the failover race


class Replicated(LocMemBackend):
    """An in-process backend with a primary identity and a replica that lags behind."""

    def __init__(self) -> None:
        super().__init__(name="replicated")
        self.clear()
        self.primary = b"run-id-of-p"
        self.replica: dict[str, Any] = {}

    def generation(self) -> bytes | None:
        return self.primary

    def replicate(self) -> None:
        with self._lock:
            self.replica = dict(self._data)

    def fail_over(self) -> None:
        """Promote the replica: the writes it never received are gone."""
        with self._lock:
            self._data.clear()
            self._data.update(self.replica)
        self.primary = b"run-id-of-r"


def store_value(store: Store, key: str, data: bytes) -> None:
    plan = Plan.build(CAT3, P)
    probe = store.lookup(key, plan)
    assert probe is not None
    tokens = store.prepare(probe, 60)
    assert tokens is not None and store.save(key, tokens, data, 60, plan)


def read(store: Store, key: str) -> bytes | None:
    probe = store.lookup(key, Plan.build(CAT3, P))
    return probe.data if probe is not None else None


def row(category_id: int) -> TableChange:
    rows = [{"id": 1, "category_id": category_id}]
    return TableChange(table="post", rows=rows, columns=frozenset({"id", "category_id"}))


@pytest.fixture
def replicated() -> Iterator[Replicated]:
    backend = Replicated()
    yield backend
    backend.clear()


def test_a_deletion_lost_in_a_failover_resurrects_nothing(replicated: Replicated) -> None:
    reader, writer = Store(backend=lambda: replicated), Store(backend=lambda: replicated)
    store_value(reader, "k", b"old rows")
    replicated.replicate()  # the replica has the value and its stamps
    writer.invalidate([row(3)], P)  # acknowledged by the primary, never replicated
    assert read(reader, "k") is None
    replicated.fail_over()  # the stamp is back, the value with it
    fresh = Store(backend=lambda: replicated)  # a process that starts after the failover
    assert read(fresh, "k") is None
    assert read(reader, "k") is None
    store_value(fresh, "k", b"new rows")
    assert read(reader, "k") == b"new rows"
    assert read(fresh, "k") == b"new rows"


def test_a_value_stored_on_the_new_primary_before_the_writer_noticed(
    replicated: Replicated,
) -> None:
    """A reader stores on the new primary before the writer whose deletion was lost there has
    talked to it: the writer, on its first call, deletes again the registries of the tables it
    invalidated lately, which invalidates that value too."""
    reader, writer = Store(backend=lambda: replicated), Store(backend=lambda: replicated)
    store_value(writer, "w", b"warm")  # the writer knows the old primary
    replicated.replicate()
    writer.invalidate([row(3)], P)  # lost with the old primary
    replicated.fail_over()
    store_value(reader, "k", b"rows")  # the stamp the writer deleted is back: not yet caught
    assert read(reader, "k") == b"rows"
    assert read(writer, "w") is None  # the writer meets the new primary...
    assert read(reader, "k") is None  # ...and its invalidation is delivered again


@pytest.mark.system
def test_sentinel_client_notes_the_primary_and_refuses_a_replica() -> None:
    wait_healthy()
    locations = [("127.0.0.1", int(p)) for p in PORTS]
    sentinel = {"locations": locations, "service_name": SERVICE}
    generation = RedisBackend(make_client(None, sentinel), track_primary=True).generation()
    primary = Sentinel(locations).discover_master(SERVICE)
    assert generation == redis.Redis(*primary).info("server")["run_id"].encode()
    host, port = Sentinel(locations).discover_slaves(SERVICE)[0]
    replica = RedisBackend(redis.Redis(host=host, port=port), track_primary=True)
    with pytest.raises(BackendError, match="not the primary"):
        replica.generation()
    with override_settings(FRESHCACHE_SENTINEL=sentinel, FRESHCACHE_REDIS=None):
        from freshcache.backends import build_backend

        built = build_backend()
        assert isinstance(built, RedisBackend) and built.generation() == generation


# -- a real failover --------------------------------------------------------------------------


def sentinels() -> list[redis.Redis]:
    return [redis.Redis(host="127.0.0.1", port=int(p), decode_responses=True) for p in PORTS]


def primary_address() -> tuple[str, int]:
    host, port = sentinels()[0].sentinel_get_master_addr_by_name(SERVICE)
    return str(host), int(port)


def wait_healthy(timeout: float = 60) -> None:
    """Every sentinel agrees on the primary, which has an in-sync replica that the sentinels
    see as healthy (a previous failover may still be settling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            addresses = {s.sentinel_get_master_addr_by_name(SERVICE) for s in sentinels()}
            primary = redis.Redis(*primary_address())
            replication = primary.info("replication")
            replicas = sentinels()[0].sentinel_slaves(SERVICE)
            healthy = (
                len(addresses) == 1
                and replication["role"] == "master"
                and replication.get("connected_slaves", 0) >= 1
                and replicas
                and all(r["is_odown"] is False and r["is_sdown"] is False for r in replicas)
                and all(r.get("master-link-status") == "ok" for r in replicas)
            )
            if healthy:
                return
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise AssertionError("the Sentinel setup is not healthy")


@pytest.mark.system
def test_failover_during_a_read_write_workload(database: dict[str, Any]) -> None:
    """Two writers and three readers (separate processes, degrade on) through Sentinel;
    ``SENTINEL FAILOVER`` in the middle. No error reaches them, no read that began after the
    failover is older than a write committed before it began, and the cache ends equal to the
    database."""
    wait_healthy()
    redis.Redis(*primary_address()).flushall()
    url = "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in PORTS) + f"/{SERVICE}"

    def fail_over() -> float:
        old = primary_address()
        deadline = time.monotonic() + 120
        while redis.Redis(*old).dbsize() < 20:  # the workers are reading and writing
            assert time.monotonic() < deadline, "the workload never started"
            time.sleep(0.05)
        sentinels()[0].execute_command("SENTINEL", "FAILOVER", SERVICE)
        while primary_address() == old or redis.Redis(*old).info("replication")["role"] != "slave":
            assert time.monotonic() < deadline, "the failover did not complete"
            time.sleep(0.02)
        return time.monotonic()

    stale_during = race(database, url, during=fail_over)
    report = os.environ.get("FRESHCACHE_STRESS_REPORT")
    if report:
        import json

        with open(report, "a") as handle:
            handle.write(json.dumps({"suite": "failover", "stale_during": stale_during}) + "\n")
    wait_healthy()
