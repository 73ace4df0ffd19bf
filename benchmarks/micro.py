"""Per-operation figures: each operation timed alone, many times, after a warm-up.

An operation is ``run(prepare(i))``: only ``run`` is timed, ``prepare`` sets the scene (builds a
queryset, refills the cache before a write, caches 10,000 keys before ``invalidate_model``).
After the loop a hit operation is run once more with a query counter: a "hit" that still
reached the database is reported as such rather than as a fast hit.

The floor replays, with a raw redis-py client, the ``GET``/``MGET`` keys the library read on a
hit, as one ``MGET``, and decodes the payloads the way the library does (msgpack for freshcache,
pickle for the peers), without building model instances. On a Redis Cluster, where one ``MGET``
cannot span slots, the floor is what freshcache's cluster engine sends: one non-transactional
cluster pipeline of single-key ``GET``s (one request per primary involved), or one ``GET``.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Count, Sum

from benchmarks.adapters import Adapter, NotAvailable, QueryCounter
from benchmarks.benchapp.models import Item
from benchmarks.config import Config

__all__ = ["Micro"]

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
    floor: bool = False
    floor_keys: int = 0
    #: Wraps the op's warm-up and timed runs (a setting changed for them only).
    around: Callable[[], AbstractContextManager[object]] = nullcontext


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
        ),
        Op(
            "miss_fetch_20",
            lambda x: list(
                Item.objects.filter(category_id=1 + x % ncat, id__gte=x).order_by("id")[:20]
            ),
            prepare=lambda i: 1 + i,
            hit=False,
        ),
        Op("miss_after_write", lambda pk: Item.objects.get(pk=pk), write_then_key, hit=False),
        Op("save", lambda obj: obj.save(), refill_then_load, hit=False),
        Op("save_inlined", lambda obj: obj.save(), refill_then_load, hit=False, around=inlined),
        Op(
            "invalidate_model",
            lambda _: adapter.invalidate_model(Item),
            fill_for_invalidate,
            hit=False,
            warmup=False,
        ),
        Op(
            "cache_key",
            adapter.cache_key,
            lambda i: Item.objects.filter(pk=hot[i % HOT]),
            hit=False,
        ),
    ]


@contextmanager
def capture_reads() -> Iterator[list[str]]:
    """Record the keys of every GET/MGET (or lookup script) any redis-py client sends meanwhile,
    cluster clients and their pipelines included (a cluster pipeline queues its commands
    through its own ``execute_command``), and freshcache's per-thread connections."""
    import redis
    from redis.cluster import ClusterPipeline, RedisCluster

    keys: list[str] = []
    classes: list[Any] = [redis.Redis, RedisCluster, ClusterPipeline]
    methods = ["execute_command"] * len(classes)
    try:  # freshcache's hot path talks to its own per-thread connection
        from freshcache.backends.pinned import PinnedConnections
    except ImportError:
        pass
    else:
        classes.append(PinnedConnections)
        methods.append("command")
    originals = [cls.__dict__[m] for cls, m in zip(classes, methods, strict=True)]

    def spy_on(original: Callable[..., Any]) -> Callable[..., Any]:
        def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
            name = str(args[0]).upper() if args else ""
            read = list(args[1:]) if name in {"GET", "MGET"} else []
            if name in {"EVALSHA", "EVAL"}:  # freshcache's lookup script: KEYS are its reads
                read = list(args[3 : 3 + int(args[2])])
            keys.extend(str(k if not isinstance(k, bytes) else k.decode()) for k in read)
            return original(self, *args, **kwargs)

        return spy

    for cls, method, original in zip(classes, methods, originals, strict=True):
        setattr(cls, method, spy_on(original))
    try:
        yield keys
    finally:
        for cls, method, original in zip(classes, methods, originals, strict=True):
            setattr(cls, method, original)


@contextmanager
def inlined() -> Iterator[None]:
    """Django's default database options meanwhile: psycopg prepares no statement."""
    connection.ensure_connection()
    raw = connection.connection
    before = getattr(raw, "prepare_threshold", None)
    if before is not None:
        raw.prepare_threshold = None
    try:
        yield
    finally:
        if before is not None:
            raw.prepare_threshold = before


def time_op(op: Op, start: int, iterations: int, warmup: int) -> list[int]:
    """Run ``warmup`` untimed then ``iterations`` timed calls; ``start`` numbers the first."""
    for i in range(start, start + warmup):
        op.run(op.prepare(i))
    gc.collect()
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(start + warmup, start + warmup + iterations):
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


class Micro:
    """The operations of one library's process, timed in batches the driver interleaves.

    Each operation remembers how far it got, so a cold miss never reads a key twice and the
    rotation over hot keys goes on from batch to batch.
    """

    def __init__(
        self, config: Config, adapter: Adapter, redis_url: str | None, cluster: bool = False
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.redis_url = redis_url
        self.cluster = cluster
        self.keys = Keys.make(config)
        self.ops = {op.name: op for op in operations(config, self.keys, adapter)}
        self.done: dict[str, int] = {}
        self.floors: dict[str, Op | None] = {}
        self.floor_nodes: dict[str, float] = {}

    def available(self, name: str) -> bool:
        return name not in CACHE_ONLY or self.adapter.caches

    def batch(self, name: str, iterations: int, warmup: int) -> list[int] | None:
        """Timed samples (ns) of ``iterations`` runs; None when the library has no such thing."""
        op = self.ops[name]
        if not self.available(name):
            return None
        start = self.done.get(name, 0)
        try:
            with op.around():
                samples = time_op(op, start, iterations, warmup if op.warmup else 0)
        except NotAvailable:
            return None
        self.done[name] = start + iterations + (warmup if op.warmup else 0)
        return samples

    def check(self, name: str) -> dict[str, Any]:
        """After the timed runs: did a hit really skip the database; did invalidation work."""
        op = self.ops[name]
        out: dict[str, Any] = {}
        if op.hit:
            out["queries_on_hit"] = queries_during(lambda: op.run(op.prepare(0)))
        if name == "invalidate_model" and self.available(name):
            first = self.keys.all_pks[0]
            out["keys"] = self.config.invalidate_keys
            out["queries_after"] = queries_during(lambda: Item.objects.get(pk=first))
        return out

    def floor_batch(self, name: str, iterations: int, warmup: int) -> dict[str, Any] | None:
        """Samples of the raw MGET + decode of the keys this operation's hits read."""
        if self.redis_url is None or not self.ops[name].floor:
            return None
        if name not in self.floors:
            self.floors[name] = self._floor_op(self.ops[name])
        floor = self.floors[name]
        if floor is None:
            return None
        start = self.done.get("floor:" + name, 0)
        samples = time_op(floor, start, iterations, warmup)
        self.done["floor:" + name] = start + iterations + warmup
        out: dict[str, Any] = {"samples": samples, "keys": floor.floor_keys}
        if self.cluster:
            out["nodes"] = self.floor_nodes[name]
        return out

    def _floor_op(self, op: Op) -> Op | None:
        import redis

        variants: list[list[str]] = []
        for i in range(HOT):
            # Run it once uncaptured first: an earlier operation (invalidate_model) may have
            # left it a miss, and the reads of a miss (the refill's, on a cluster) are no hit's.
            op.run(op.prepare(i))
            with capture_reads() as keys:
                op.run(op.prepare(i))
            variants.append(keys)
        if not all(variants):
            return None
        decode = self.adapter.decode_floor
        assert self.redis_url is not None
        if self.cluster:
            return self._cluster_floor_op(op.name, variants)
        client = redis.Redis.from_url(self.redis_url)

        def run(i: int) -> object:
            return decode(client.mget(variants[i % HOT]))  # type: ignore[arg-type]

        return Op(op.name, run, floor_keys=len(variants[0]))

    def _cluster_floor_op(self, name: str, variants: list[list[str]]) -> Op:
        from redis.cluster import RedisCluster

        assert self.redis_url is not None
        client = RedisCluster.from_url(self.redis_url)
        decode = self.adapter.decode_floor
        manager = client.nodes_manager

        def node_count(keys: list[str]) -> int:
            return len({manager.get_node_from_slot(client.keyslot(k)).name for k in keys})

        # How many primaries one hit's keys live on, on average over the rotation.
        self.floor_nodes[name] = sum(map(node_count, variants)) / len(variants)

        def run(i: int) -> object:
            keys = variants[i % HOT]
            if len(keys) == 1:
                return decode([client.get(keys[0])])  # type: ignore[list-item]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return decode(pipe.execute())

        return Op(name, run, floor_keys=len(variants[0]))
