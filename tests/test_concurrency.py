"""Several OS processes against one PostgreSQL and one Redis: writers in transactions, readers
through the cache. Checks read-your-writes, that no read returns a value older than the last
write committed before it began, and that everything equals the database at the end."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis

from tests import concurrency_worker as worker

pytestmark = pytest.mark.system

PG = {
    "host": os.environ.get("FRESHCACHE_TEST_PG_HOST", "127.0.0.1"),
    "port": os.environ.get("FRESHCACHE_TEST_PG_PORT", "5432"),
    "user": os.environ.get("FRESHCACHE_TEST_PG_USER", "postgres"),
}
ROUNDS = int(os.environ.get("FRESHCACHE_STRESS_ROUNDS", "60"))
#: How long the workers go on after ``race(during=...)``'s event.
AFTER_DURING = 3.0
REDIS = os.environ.get("FRESHCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]


@pytest.fixture
def database() -> Any:
    """A database of its own on the private PostgreSQL (every combination has one running)."""
    name = f"freshcache_concurrency_{os.getpid()}"
    admin = psycopg.connect(dbname="postgres", autocommit=True, **PG)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    yield {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": PG["host"],
        "PORT": PG["port"],
        "USER": PG["user"],
    }
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def run(target: Any, *args: Any) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


def test_writers_and_readers_in_separate_processes(database: dict[str, Any]) -> None:
    redis_url = f"{REDIS}/3"
    redis.Redis.from_url(redis_url).flushdb()
    race(database, redis_url)


def race(
    database: dict[str, Any],
    redis_url: str,
    during: Callable[[], float] | None = None,
    rounds: int = ROUNDS,
) -> int:
    """Two writer and three reader processes on ``redis_url`` (tests/test_cluster.py runs it on
    a Redis Cluster, tests/test_sentinel.py through Sentinel), then the final consistency check.

    ``during`` runs while they do (a failover) and returns the time from which no read may be
    stale; the workers then go on for ``AFTER_DURING`` seconds, and the stale reads that began
    before that time are counted and returned."""
    setup = run(worker.migrate, database, redis_url)
    setup.join(120)
    assert setup.exitcode == 0
    context = multiprocessing.get_context("spawn")
    out, stop = context.Queue(), context.Event() if during is not None else None
    if during is not None:
        rounds = 10**6  # until stopped
    processes = [run(worker.writer, database, redis_url, w, rounds, out, stop) for w in range(2)]
    processes += [
        run(worker.reader, database, redis_url, r, rounds * 2 // 3, out, stop) for r in range(3)
    ]
    after = 0.0
    if during is not None:
        try:
            after = during()
            time.sleep(AFTER_DURING)
        finally:
            stop.set()  # type: ignore[union-attr]
    results = [out.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    commits: dict[str, list[tuple[float, int]]] = {}
    violations: list[str] = []
    reads: list[tuple[str, float, int]] = []
    for kind, _, data, problems in results:
        violations += problems
        if kind == "writer":
            for name, version, at in data:
                commits.setdefault(name, []).append((at, version))
        else:
            reads += data
    assert violations == []
    stale = []
    for name, began, value in reads:
        done_before = [version for at, version in commits.get(name, []) if at < began]
        if done_before and value < max(done_before):
            stale.append((name, began, value, max(done_before)))
    before = [read for read in stale if read[1] < after]
    assert stale == before, f"{len(stale) - len(before)} reads older than a prior commit"
    if during is None:
        assert len(reads) == 3 * (rounds * 2 // 3) * 2 * worker.WRITERS_ROWS
    assert any(began >= after for _, began, _ in reads), "no read after `during`"
    report = os.environ.get("FRESHCACHE_STRESS_REPORT")
    if report:
        import json

        with open(report, "a") as handle:
            writes = sum(len(v) for v in commits.values())
            line = {"suite": "concurrency", "writes": writes, "reads": len(reads), "stale": 0}
            handle.write(json.dumps(line) + "\n")

    check = run(_final_check, database, redis_url, out)
    assert out.get(timeout=120) == "consistent"
    check.join(60)
    return len(before)


def _final_check(db: dict[str, Any], redis_url: str, out: Any) -> None:
    """After the writers stopped: every cached query equals the database, with no TTL needed."""
    worker.setup(db, redis_url)
    from django.test import override_settings

    from tests.propapp.models import Person

    reads = {
        "gets": lambda: [
            Person.objects.get(name=p.name).score for p in Person.objects.order_by("id")
        ],
        # ordered: without ORDER BY, two correct answers may list the same rows differently
        "red": lambda: list(
            Person.objects.filter(team__name="red").order_by("id").values_list("name", "score")
        ),
        "count": lambda: Person.objects.filter(score__gte=1).count(),
    }
    cached = {name: read() for name, read in reads.items()}
    with override_settings(FRESHCACHE_ENABLED=False):
        truth = {name: read() for name, read in reads.items()}
    out.put("consistent" if cached == truth else f"inconsistent: {cached} != {truth}")
