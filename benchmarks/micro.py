"""Per-operation figures: each operation timed alone, many times, after a warm-up.

An operation is ``run(prepare(i))``: only ``run`` is timed, ``prepare`` sets the scene (builds a
queryset, refills the cache before a write, caches 10,000 keys before ``invalidate_model``).
After the loop a hit operation is run once more with a query counter: a "hit" that still
reached the database is reported as such rather than as a fast hit.

The floor replays, with a raw redis-py client, the ``GET``/``MGET`` keys the library read on a
hit, as one ``MGET``, and decodes the payloads the way the library does (msgpack for freshcache,
pickle for the peers), without building model instances.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Count, Sum

from benchmarks.adapters import Adapter, NotAvailable, QueryCounter
from benchmarks.benchapp.models import Item
from benchmarks.config import Config
from benchmarks.stats import summarize

__all__ = ["run_micro"]

HOT = 100  # distinct keys a hit operation rotates over
HOT_CATEGORIES = 10
CACHE_ONLY = frozenset({"invalidate_model", "cache_key"})


@dataclass
class Op:
    name: str
    run: Callable[[Any], object]
    prepare: Callable[[int], Any] = int
    hit: bool = True
    warmup: bool = True
    iterations: int | None = None
    floor: bool = False


@dataclass
class Keys:
    hot: list[int]
    hot_slugs: list[str]
    writes: list[int]
    cold: list[int]
    categories: list[int]
    all_pks: list[int]

    @classmethod
    def make(cls, config: Config) -> Keys:
        pks = list(range(1, config.rows + 1))
        random.Random(1234).shuffle(pks)
        hot = pks[:HOT]
        return cls(
            hot=hot,
            hot_slugs=[f"item-{pk}" for pk in hot],
            writes=pks[HOT : 2 * HOT],
            cold=pks[2 * HOT :],
            categories=list(range(1, HOT_CATEGORIES + 1)),
            all_pks=sorted(pks),
        )


def _fetch(n: int, keys: Keys) -> Callable[[int], object]:
    cats = keys.categories

    def run(i: int) -> object:
        return list(Item.objects.filter(category_id=cats[i % len(cats)]).order_by("id")[:n])

    return run


def operations(config: Config, keys: Keys, adapter: Adapter) -> list[Op]:
    hot, slugs, cats = keys.hot, keys.hot_slugs, keys.categories
    ncat = len(cats)
    cold = iter(keys.cold)

    def refill_then_load(i: int) -> Item:
        pk = keys.writes[i % HOT]
        obj = Item.objects.get(pk=pk)  # a cached read the write then has to invalidate
        obj.stock += 1
        return obj

    def write_then_key(i: int) -> int:
        pk = keys.writes[i % HOT]
        obj = Item.objects.get(pk=pk)
        obj.stock += 1
        obj.save()
        return pk

    def fill_for_invalidate(i: int) -> None:
        for pk in keys.all_pks[: config.invalidate_keys]:
            Item.objects.get(pk=pk)

    miss_iterations = min(config.iterations, (len(keys.cold) - config.warmup) // 2)
    return [
        Op("get_pk", lambda i: Item.objects.get(pk=hot[i % HOT]), floor=True),
        Op("get_slug", lambda i: Item.objects.get(slug=slugs[i % HOT]), floor=True),
        Op("fetch_1", _fetch(1, keys), floor=True),
        Op("fetch_20", _fetch(20, keys), floor=True),
        Op("fetch_200", _fetch(200, keys), floor=True),
        Op("count", lambda i: Item.objects.filter(category_id=cats[i % ncat]).count(), floor=True),
        Op(
            "exists",
            lambda i: Item.objects.filter(category_id=cats[i % ncat], active=True).exists(),
            floor=True,
        ),
        Op(
            "aggregate",
            lambda i: Item.objects.filter(category_id=cats[i % ncat]).aggregate(
                total=Sum("price"), n=Count("id")
            ),
            floor=True,
        ),
        Op(
            "select_related",
            lambda i: list(
                Item.objects.select_related("category")
                .filter(category_id=cats[i % ncat])
                .order_by("id")[:20]
            ),
            floor=True,
        ),
        Op(
            "miss_get_pk",
            lambda pk: Item.objects.get(pk=pk),
            prepare=lambda i: next(cold),
            hit=False,
            iterations=miss_iterations,
        ),
        Op(
            "miss_fetch_20",
            lambda x: list(Item.objects.filter(category_id=1 + x % ncat, id__gte=x).order_by("id")[:20]),
            prepare=lambda i: 1 + i,
            hit=False,
        ),
        Op("miss_after_write", lambda pk: Item.objects.get(pk=pk), write_then_key, hit=False),
        Op("save", lambda obj: obj.save(), refill_then_load, hit=False),
        Op(
            "invalidate_model",
            lambda _: adapter.invalidate_model(Item),
            fill_for_invalidate,
            hit=False,
            warmup=False,
            iterations=config.invalidate_repeats,
        ),
        Op("cache_key", adapter.cache_key, lambda i: Item.objects.filter(pk=hot[i % HOT]), hit=False),
    ]


@contextmanager
def capture_reads() -> Iterator[list[str]]:
    """Record the keys of every GET/MGET any redis-py client sends meanwhile."""
    import redis

    keys: list[str] = []
    original = redis.Redis.execute_command

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args and str(args[0]).upper() in {"GET", "MGET"}:
            keys.extend(str(k if not isinstance(k, bytes) else k.decode()) for k in args[1:])
        return original(self, *args, **kwargs)

    redis.Redis.execute_command = spy  # type: ignore[method-assign]
    try:
        yield keys
    finally:
        redis.Redis.execute_command = original  # type: ignore[method-assign]


def time_op(op: Op, iterations: int, warmup: int) -> list[int]:
    for i in range(warmup):
        op.run(op.prepare(i))
    gc.collect()
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(warmup, warmup + iterations):
        arg = op.prepare(i)
        t0 = clock()
        op.run(arg)
        samples.append(clock() - t0)
    return samples


def queries_during(run: Callable[[], object]) -> int:
    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        run()
    return counter.count


def run_micro(
    config: Config,
    adapter: Adapter,
    redis_url: str | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    keys = Keys.make(config)
    results: dict[str, Any] = {"ops": {}, "floor": {}, "key_api": adapter.key_api}
    ops = operations(config, keys, adapter)
    for n, op in enumerate(ops, 1):
        iterations = op.iterations if op.iterations is not None else config.iterations
        warmup = max(config.warmup, HOT) if op.warmup else 0
        started = time.monotonic()
        entry: dict[str, Any] = {}
        if op.name in CACHE_ONLY and not adapter.caches:
            results["ops"][op.name] = {"summary": None, "note": "n/a"}
            continue
        try:
            samples = time_op(op, iterations, warmup)
        except NotAvailable:
            results["ops"][op.name] = {"summary": None, "note": "n/a"}
            progress(f"micro {n}/{len(ops)} {op.name}: n/a")
            continue
        entry["summary"] = summarize(samples)
        if op.hit:
            entry["queries_on_hit"] = queries_during(lambda: op.run(op.prepare(0)))
        if op.name == "invalidate_model":
            entry["keys"] = config.invalidate_keys
            entry["queries_after"] = queries_during(lambda: Item.objects.get(pk=keys.all_pks[0]))
        results["ops"][op.name] = entry
        s = entry["summary"]
        progress(
            f"micro {n}/{len(ops)} {op.name}: median {s['median_us']:.1f} us, "
            f"p99 {s['p99_us']:.1f} us ({iterations} runs, {time.monotonic() - started:.1f}s)"
        )
        if op.floor and redis_url is not None:
            results["floor"][op.name] = floor(op, adapter, redis_url, iterations)
    return results


def floor(op: Op, adapter: Adapter, redis_url: str, iterations: int) -> Any:
    """A raw MGET of the keys one hit read, plus decoding, over the same rotation of keys."""
    import redis

    variants: list[list[str]] = []
    for i in range(HOT):
        with capture_reads() as keys:
            op.run(op.prepare(i))
        variants.append(keys)
    if not all(variants):
        return None
    client = redis.Redis.from_url(redis_url)

    def run(i: int) -> object:
        return adapter.decode_floor(client.mget(variants[i % HOT]))

    samples = time_op(Op(op.name, run), iterations, HOT)
    client.close()
    return {"summary": summarize(samples), "keys": len(variants[0])}
