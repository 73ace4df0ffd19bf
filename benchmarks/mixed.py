"""The mixed workload: N processes reading and writing items picked from a Zipf distribution.

Reads are ``Item.objects.get(pk=...)`` or ``get(slug=...)``; a write loads the item through the
ORM, sets its ``version`` and calls ``save()``. Every cell starts with the library's Redis
database empty (in-process caches start empty because every cell starts new processes).

Stale reads. Writers take a per-item lock and draw ``version`` from a global counter, so an
item's versions grow in commit order; after ``save()`` returns (the commit and the library's
invalidation are done) the writer records the version in a Redis hash on a database of its own.
A checked read first reads that hash (``v_before``), then reads through the cache, then reads
the row again with a separate psycopg connection that no library sees. The read is **stale**
when the cached version is older than ``v_before``: it began after a write had committed and
returned, and still got an older answer. ``differs`` counts cached answers that do not match
the database at check time for any reason, including writes that raced with the read; it is
not an error by itself.

Latencies and throughput count only the timed ORM calls after the warm-up: the checks, locks
and bookkeeping are subtracted from each process's wall time.
"""

from __future__ import annotations

import bisect
import multiprocessing
import random
import threading
import time
import traceback
from array import array
from typing import Any

from benchmarks.stats import summarize

__all__ = ["run_cell"]

_START_TIMEOUT = 180.0
_STALE_EXAMPLES = 5


class Zipf:
    """Item ids drawn with probability proportional to ``1 / rank**s`` (ranks shuffled once)."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        ids = list(range(1, n + 1))
        random.Random(99).shuffle(ids)  # the same popular items for every library
        self.ids = ids
        total = 0.0
        self.cumulative: list[float] = []
        for rank in range(1, n + 1):
            total += 1.0 / rank**s
            self.cumulative.append(total)
        self.total = total
        self.rng = rng

    def __call__(self) -> int:
        i = bisect.bisect_left(self.cumulative, self.rng.random() * self.total)
        return self.ids[min(i, len(self.ids) - 1)]


def _child(spec: dict[str, Any], index: int, barrier: Any, queue: Any) -> None:
    try:
        queue.put(_child_run(spec, index, barrier))
    except BaseException:
        barrier.abort()
        queue.put({"index": index, "error": traceback.format_exc()})


def _child_run(spec: dict[str, Any], index: int, barrier: Any) -> dict[str, Any]:
    import django

    django.setup()
    import psycopg
    import redis
    from django.db import connection

    from benchmarks.adapters import QueryCounter
    from benchmarks.benchapp.models import Item

    state = redis.Redis.from_url(spec["state_url"])
    verify = psycopg.connect(**spec["pg"], autocommit=True)
    counter = QueryCounter()
    connection.ensure_connection()
    connection.execute_wrappers.append(counter)
    rng = random.Random(1000 * spec["seed"] + index)
    pick = Zipf(spec["rows"], spec["zipf_s"], rng)
    ns: str = spec["namespace"]
    write_ratio: float = spec["write_ratio"]
    check_rate: float = spec["check_rate"]

    reads, writes = array("q"), array("q")
    hits = checked = stale = differs = lock_skips = 0
    examples: list[dict[str, Any]] = []
    touched: set[int] = set()
    overhead = 0
    clock = time.perf_counter_ns

    barrier.wait(timeout=_START_TIMEOUT)
    start = clock()
    measure_from = start + int(spec["warmup"] * 1e9)
    end = start + int(spec["duration"] * 1e9)
    while True:
        t_loop = clock()
        if t_loop >= end:
            break
        measured = t_loop >= measure_from
        pk = pick()
        touched.add(pk)
        if rng.random() < write_ratio:
            lock = f"{ns}:lock:{pk}"
            if not state.set(lock, index, nx=True, px=10_000):
                lock_skips += 1
                overhead += clock() - t_loop if measured else 0
                continue
            version = int(state.incr(f"{ns}:seq"))
            t0 = clock()
            obj = Item.objects.get(pk=pk)
            obj.version = version
            obj.save()
            t1 = clock()
            state.hset(f"{ns}:version", str(pk), version)
            state.delete(lock)
            if measured:
                writes.append(t1 - t0)
                overhead += (t0 - t_loop) + (clock() - t1)
            continue
        check = rng.random() < check_rate
        before = 0
        if check:
            raw = state.hget(f"{ns}:version", str(pk))
            before = int(raw) if raw else 0
        by_slug = rng.random() < 0.5
        queries = counter.count
        t0 = clock()
        obj = Item.objects.get(slug=f"item-{pk}") if by_slug else Item.objects.get(pk=pk)
        t1 = clock()
        hit = counter.count == queries
        if check:
            row = verify.execute("SELECT version FROM benchapp_item WHERE id = %s", (pk,))
            in_db = row.fetchone()[0]  # type: ignore[index]
            checked += 1
            if obj.version != in_db:
                differs += 1
            if obj.version < before:
                stale += 1
                if len(examples) < _STALE_EXAMPLES:
                    examples.append(
                        {
                            "pk": pk,
                            "by": "slug" if by_slug else "pk",
                            "cached": obj.version,
                            "committed_before_read": before,
                            "in_db_after": in_db,
                            "hit": hit,
                        }
                    )
        if measured:
            reads.append(t1 - t0)
            hits += hit
            overhead += (t0 - t_loop) + (clock() - t1)
    wall = clock() - measure_from
    verify.close()
    return {
        "index": index,
        "ops": len(reads) + len(writes),
        "reads": reads.tobytes(),
        "writes": writes.tobytes(),
        "hits": hits,
        "busy_ns": max(wall - overhead, 1),
        "checked": checked,
        "stale": stale,
        "differs": differs,
        "examples": examples,
        "lock_skips": lock_skips,
        "touched": sorted(touched),
    }


class MemorySampler(threading.Thread):
    """Polls ``used_memory`` and the library database's key count while a cell runs."""

    def __init__(self, url: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def snapshot(self) -> tuple[float, int, int]:
        used = int(self.client.info("memory")["used_memory"])
        return time.monotonic() - self._t0, used, int(self.client.dbsize())

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.samples.append(self.snapshot())

    def stop(self) -> tuple[float, int, int]:
        self._stop_event.set()
        self.join()
        last = self.snapshot()
        self.samples.append(last)
        return last


def run_cell(
    spec: dict[str, Any],
    workers: int,
    write_ratio: float,
    duration: float,
    redis_url: str | None,
) -> dict[str, Any]:
    import redis

    baseline = None
    if redis_url is not None:
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        baseline = int(client.info("memory")["used_memory"])
        client.close()
    spec = {**spec, "write_ratio": write_ratio, "duration": duration}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(spec, i, barrier, queue)) for i in range(workers)]
    for proc in procs:
        proc.start()
    outputs: list[dict[str, Any]] = []
    sampler = MemorySampler(redis_url) if redis_url is not None else None
    try:
        barrier.wait(timeout=_START_TIMEOUT)
        if sampler is not None:
            sampler.start()
        for _ in procs:
            outputs.append(queue.get(timeout=duration + _START_TIMEOUT))
    except BaseException:
        for proc in procs:
            proc.terminate()
        errors = [o["error"] for o in outputs if "error" in o]
        if errors:
            raise RuntimeError("a workload process failed:\n" + errors[0]) from None
        raise
    finally:
        for proc in procs:
            proc.join(timeout=30)
    errors = [o["error"] for o in outputs if "error" in o]
    if errors:
        raise RuntimeError("a workload process failed:\n" + errors[0])
    memory = None
    if sampler is not None:
        _, used, keys = sampler.stop()
        memory = {
            "baseline": baseline,
            "used_memory": used,
            "delta": used - (baseline or 0),
            "keys": keys,
            "samples": sampler.samples,
        }
    reads = [x for o in outputs for x in array("q", o["reads"])]
    writes = [x for o in outputs for x in array("q", o["writes"])]
    touched: set[int] = set()
    for o in outputs:
        touched.update(o["touched"])
    n_reads = len(reads)
    return {
        "workers": workers,
        "write_ratio": write_ratio,
        "duration": duration,
        "reads": n_reads,
        "writes": len(writes),
        "throughput": sum(o["ops"] / (o["busy_ns"] / 1e9) for o in outputs),
        "read": summarize(reads),
        "write": summarize(writes),
        "hit_ratio": sum(o["hits"] for o in outputs) / n_reads if n_reads else None,
        "checked": sum(o["checked"] for o in outputs),
        "stale": sum(o["stale"] for o in outputs),
        "differs": sum(o["differs"] for o in outputs),
        "stale_examples": [e for o in outputs for e in o["examples"]][:_STALE_EXAMPLES],
        "lock_skips": sum(o["lock_skips"] for o in outputs),
        "touched": len(touched),
        "memory": memory,
    }
