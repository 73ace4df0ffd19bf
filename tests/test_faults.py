"""Faults with real servers: flushes, evictions under maxmemory, timeouts, a killed worker.

After each, no read is stale and the application kept serving.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings

from freshcache.store import store
from tests import fault_worker
from tests.propapp.models import Person, Team

pytestmark = pytest.mark.django_db(transaction=True)

PROFILES = {"propapp.*": {"ops": "all", "timeout": 300}}


def truth(read: Any) -> Any:
    with override_settings(FRESHCACHE_ENABLED=False):
        return read()


def check(reads: list[Any]) -> None:
    for read in reads:
        assert read() == truth(read)
        assert read() == truth(read)


def workload_reads(names: list[str]) -> list[Any]:
    return [
        lambda: list(Team.objects.order_by("id").values_list("name", "budget")),
        lambda: [Team.objects.filter(name=n).count() for n in names],
        lambda: list(Person.objects.filter(team__name=names[0]).values_list("name", flat=True)),
    ]


@override_settings(FRESHCACHE=PROFILES)
def test_flush_mid_workload() -> None:
    names = [f"t{i}" for i in range(5)]
    for name in names:
        Team.objects.create(name=name)
    reads = workload_reads(names)
    check(reads)
    backend = store.backend
    if hasattr(backend, "client"):
        backend.client.flushdb()
    else:
        backend.clear()  # type: ignore[attr-defined]
    Team.objects.filter(name="t1").update(budget=5)
    Person.objects.create(name="p", team=Team.objects.get(name="t0"))
    check(reads)


@pytest.mark.system
@pytest.mark.parametrize(
    "own_redis",
    [
        ["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"],
        ["--maxmemory", "2mb", "--maxmemory-policy", "volatile-lru"],
    ],
    indirect=True,
    ids=["allkeys-lru", "volatile-lru"],
)
def test_eviction_under_maxmemory(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = own_redis
    names = [f"team-{i}" for i in range(40)]
    Team.objects.bulk_create([Team(name=n, meta={"filler": "x" * 5000}) for n in names])
    with override_settings(FRESHCACHE=PROFILES, FRESHCACHE_BACKEND="redis", FRESHCACHE_REDIS=url):
        reads = workload_reads(names)
        for round_ in range(15):
            # many distinct cached queries with sizeable rows (about 3 MB) fill the 2 MB
            for i in range(40):
                list(Team.objects.filter(name=names[i], budget__gte=-round_).values_list("meta"))
            Team.objects.filter(name=names[round_ % 40]).update(budget=round_)
            check(reads)
        evicted = int(redis.Redis.from_url(url).info("stats")["evicted_keys"])
    assert evicted > 0, "the test must really evict keys"


@pytest.mark.system
def test_socket_timeouts_degrade_without_errors(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = own_redis
    Team.objects.create(name="red")
    with override_settings(
        FRESHCACHE=PROFILES,
        FRESHCACHE_BACKEND="redis",
        FRESHCACHE_REDIS=f"{url}",
        FRESHCACHE_DEGRADE_ON_FAILURE=True,
    ):
        check(workload_reads(["red"]))
        os.kill(process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for i in range(20):  # the circuit breaker keeps the outage cheap
                Team.objects.filter(name="red").update(budget=i)
                assert Team.objects.get(name="red").budget == i
            assert time.monotonic() - started < 10
        finally:
            os.kill(process.pid, signal.SIGCONT)
        store._retry_at = 0.0
        check(workload_reads(["red"]))


@pytest.mark.system
def test_killed_worker_in_the_middle_of_a_store(
    own_redis: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Processes share a file database; one dies holding the lock before it stores."""
    url, _ = own_redis
    db_name = str(tmp_path / "faults.sqlite3")
    context = multiprocessing.get_context("spawn")

    def run(target: Any, *args: Any) -> Any:
        process = context.Process(target=target, args=(url, db_name, *args))
        process.start()
        return process

    setup = run(fault_worker.prepare)
    setup.join(60)
    assert setup.exitcode == 0
    ready, out = context.Event(), context.Queue()
    doomed = run(fault_worker.hold_and_die, ready)
    assert ready.wait(60), "the worker reached the store"
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(10)
    survivor = run(fault_worker.survivor, out)
    budgets, again, seconds = out.get(timeout=60)
    survivor.join(10)
    assert (budgets, again) == ([2], [2])
    assert seconds < 5, "the dead holder's lock did not block past its TTL"
