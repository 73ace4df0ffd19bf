"""The mixed workload: N processes reading and writing items picked from a Zipf distribution.

A read is ``Item.objects.get(pk=...)`` (40%), ``get(slug=...)`` (40%) or the sum of the
``version`` column over the item's category, ``filter(category_id=...).aggregate(Sum(...))``
(20%). A write loads the item through the ORM, sets its ``version`` and calls ``save()``. Every
cell starts with the library's Redis database empty, or every primary of the Redis Cluster
(in-process caches start empty because every cell starts new processes). Memory and keys are
summed over the cluster's primaries, and each primary's keys and commands processed during the
cell are kept too (the key distribution).

Stale reads. Writers take a per-item lock and draw ``version`` from a global counter, so an
item's version, and therefore its category's sum, only grows, in commit order. Once ``save()``
has returned (the commit and the library's invalidation are done) the writer records the item's
version in a :class:`~benchmarks.ledger.Ledger` the processes share, which keeps each category's
sum of recorded versions too. A checked read first takes those records (``committed``), reads
the database directly (``strict``), reads through the cache, then reads the database again
(``after``), the database reads on a psycopg connection no library sees. The read is:

* **stale** when its answer is below ``committed``: it began after a write had committed and
  been invalidated, and still returned an older answer;
* in the **window** when it is below ``strict`` only: a write had committed but its ``save()``
  had not returned yet (the interval between commit and invalidation every such cache has);
* **differs** when it does not match ``after``, for any reason, racing writes included.

Latencies and throughput count only the timed ORM calls after the warm-up: the checks, locks
and bookkeeping are subtracted from each process's wall time. That cannot give back the CPU they
take from the other processes when processes outnumber cores, so the bookkeeping stays in shared
memory: no server sees it, and only the checked reads query the database.
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

from benchmarks.ledger import Ledger, category_of
from benchmarks.servers import NodeStats, RedisTarget
from benchmarks.stats import summarize

__all__ = ["Zipf", "read_answer", "read_kind", "run_cell"]

_START_TIMEOUT = 180.0
_STALE_EXAMPLES = 5
#: The bookkeeping of the library process's cells, kept from one cell to the next.
_LEDGER: Ledger | None = None


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


def read_kind(r: float) -> str:
    """The read a draw in [0, 1) picks: ``get(pk=)`` 40%, ``get(slug=)`` 40%, the category's
    sum 20% (the mix :mod:`benchmarks.cost` measures too)."""
    return "pk" if r < 0.4 else "slug" if r < 0.8 else "category"


def read_answer(kind: str, pk: int, categories: int) -> int:
    """One read through the ORM: the item's ``version``, or its category's sum of them."""
    from django.db.models import Sum

    from benchmarks.benchapp.models import Item

    if kind == "pk":
        return int(Item.objects.get(pk=pk).version)
    if kind == "slug":
        return int(Item.objects.get(slug=f"item-{pk}").version)
    total = Item.objects.filter(category_id=category_of(pk, categories)).aggregate(
        s=Sum("version")
    )["s"]
    return int(total or 0)


def _child(spec: dict[str, Any], index: int, ledger: Ledger, barrier: Any, queue: Any) -> None:
    try:
        queue.put(_child_run(spec, index, ledger, barrier))
    except BaseException:
        barrier.abort()
        queue.put({"index": index, "error": traceback.format_exc()})


class Tally:
    """One process's counts; the driver adds them up across processes."""

    def __init__(self) -> None:
        self.reads, self.writes = array("q"), array("q")
        self.hits = self.checked = self.stale = self.window = self.differs = 0
        self.lock_skips = 0
        self.stale_items: set[str] = set()
        self.examples: list[dict[str, Any]] = []
        self.touched: set[int] = set()
        self.overhead = 0


def _child_run(spec: dict[str, Any], index: int, ledger: Ledger, barrier: Any) -> dict[str, Any]:
    import django

    django.setup()
    import psycopg
    from django.db import connection

    from benchmarks.adapters import QueryCounter
    from benchmarks.benchapp.models import Item

    verify = psycopg.connect(**spec["pg"], autocommit=True)
    counter = QueryCounter()
    connection.ensure_connection()
    connection.execute_wrappers.append(counter)
    rng = random.Random(1000 * spec["seed"] + index)
    pick = Zipf(spec["rows"], spec["zipf_s"], rng)
    categories: int = spec["categories"]
    write_ratio: float = spec["write_ratio"]
    check_rate: float = spec["check_rate"]
    tally = Tally()
    clock = time.perf_counter_ns

    def in_db(kind: str, key: int) -> int:
        """The answer now, from a connection no library sees."""
        if kind == "category":
            sql = "SELECT COALESCE(SUM(version), 0) FROM benchapp_item WHERE category_id = %s"
        else:
            sql = "SELECT version FROM benchapp_item WHERE id = %s"
        return int(verify.execute(sql, (key,)).fetchone()[0])  # type: ignore[index]

    def write(pk: int) -> int | None:
        version = ledger.lock_and_draw(pk)
        if not version:
            tally.lock_skips += 1
            return None
        t0 = clock()
        try:
            obj = Item.objects.get(pk=pk)
            obj.version = version
            obj.save()
            elapsed = clock() - t0
        except BaseException:
            ledger.record_and_unlock(pk, 0)  # unlocks and records nothing
            raise
        ledger.record_and_unlock(pk, version)
        return elapsed

    def read(kind: str, pk: int) -> tuple[int, int, bool]:
        queries = counter.count
        t0 = clock()
        answer = read_answer(kind, pk, categories)
        elapsed = clock() - t0
        return answer, elapsed, counter.count == queries

    def checked_read(kind: str, pk: int) -> tuple[int, bool]:
        key = category_of(pk, categories) if kind == "category" else pk
        floor = ledger.committed(kind, key)
        strict = in_db(kind, key)
        answer, elapsed, hit = read(kind, pk)
        after = in_db(kind, key)
        tally.checked += 1
        tally.differs += answer != after
        if answer < floor:
            tally.stale += 1
            tally.stale_items.add(f"{kind}:{key}")
            if len(tally.examples) < _STALE_EXAMPLES:
                tally.examples.append(
                    {"by": kind, "key": key, "cached": answer, "committed_before_read": floor,
                     "in_db_before": strict, "in_db_after": after, "hit": hit}
                )  # fmt: skip
        elif answer < strict:
            tally.window += 1
        return elapsed, hit

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
        tally.touched.add(pk)
        if rng.random() < write_ratio:
            elapsed = write(pk)
            if measured and elapsed is not None:
                tally.writes.append(elapsed)
        else:
            r = rng.random()
            kind = read_kind(r)
            if rng.random() < check_rate:
                elapsed, hit = checked_read(kind, pk)
            else:
                _, elapsed, hit = read(kind, pk)
            if measured:
                tally.reads.append(elapsed)
                tally.hits += hit
        if measured:
            tally.overhead += (clock() - t_loop) - (elapsed or 0)
    wall = clock() - measure_from
    verify.close()
    return {
        "index": index,
        "ops": len(tally.reads) + len(tally.writes),
        "reads": tally.reads.tobytes(),
        "writes": tally.writes.tobytes(),
        "hits": tally.hits,
        "busy_ns": max(wall - tally.overhead, 1),
        "checked": tally.checked,
        "stale": tally.stale,
        "stale_items": sorted(tally.stale_items),
        "window": tally.window,
        "differs": tally.differs,
        "examples": tally.examples,
        "lock_skips": tally.lock_skips,
        "touched": sorted(tally.touched),
    }


class MemorySampler(threading.Thread):
    """Polls ``used_memory`` and the library database's key count while a cell runs (both
    summed over the primaries on a cluster)."""

    def __init__(self, target: RedisTarget, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def snapshot(self) -> tuple[float, int, int]:
        used, keys = self.target.used_memory_and_keys()
        return time.monotonic() - self._t0, used, keys

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
    cluster: bool = False,
) -> dict[str, Any]:
    baseline = None
    target = RedisTarget(redis_url, cluster) if redis_url is not None else None
    before: list[NodeStats] = []
    if target is not None:
        target.flush()
        before = target.nodes()
        baseline = sum(n.used_memory for n in before)
    spec = {**spec, "workers": workers, "write_ratio": write_ratio, "duration": duration}
    global _LEDGER
    ctx = multiprocessing.get_context("spawn")
    if _LEDGER is None:
        _LEDGER = Ledger(ctx, spec["rows"], spec["categories"])
    ledger = _LEDGER
    barrier = ctx.Barrier(workers + 1)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(spec, i, ledger, barrier, queue)) for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    outputs: list[dict[str, Any]] = []
    sampler = MemorySampler(target) if target is not None else None
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
    if sampler is not None and target is not None:
        _, used, keys = sampler.stop()
        after = {n.name: n for n in target.nodes()}
        target.close()
        memory = {
            "baseline": baseline,
            "used_memory": used,
            "delta": used - (baseline or 0),
            "keys": keys,
            "samples": sampler.samples,
            # Per primary (the server itself for a single Redis): its keys and memory after
            # the cell, and the commands it processed during the cell (the sampler's own few
            # INFO/DBSIZE included: about four a second).
            "nodes": [
                {
                    "node": n.name,
                    "keys": after[n.name].keys,
                    "used_memory": after[n.name].used_memory,
                    "delta": after[n.name].used_memory - n.used_memory,
                    "commands": after[n.name].commands - n.commands,
                }
                for n in before
                if n.name in after
            ],
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
        "stale_items": len({i for o in outputs for i in o["stale_items"]}),
        "window": sum(o["window"] for o in outputs),
        "differs": sum(o["differs"] for o in outputs),
        "stale_examples": [e for o in outputs for e in o["examples"]][:_STALE_EXAMPLES],
        "lock_skips": sum(o["lock_skips"] for o in outputs),
        "touched": len(touched),
        "memory": memory,
    }
