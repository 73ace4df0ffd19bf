"""What is benchmarked and how hard: the libraries and the knobs, shared by driver and workers.

Standard library only: the driver imports it from its own venv, each worker from its library's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BACKENDS",
    "HIT_OPS",
    "LIBRARIES",
    "MICRO_OPS",
    "PREPARE_THRESHOLD",
    "REPO_ROOT",
    "Config",
    "Library",
    "MixedConfig",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The database ``OPTIONS["prepare_threshold"]`` every library runs with (the report says so).
PREPARE_THRESHOLD = 5

#: Operations served from a warm cache; each also gets a floor (see benchmarks/micro.py).
HIT_OPS = (
    "get_pk",
    "get_slug",
    "fetch_1",
    "fetch_20",
    "fetch_200",
    "count",
    "exists",
    "aggregate",
    "select_related",
)
#: Every micro operation, in the order they run (the misses need keys nothing read yet).
MICRO_OPS = (
    *HIT_OPS,
    "miss_get_pk",
    "miss_fetch_20",
    "miss_after_write",
    "save",
    "save_inlined",
    "invalidate_model",
    "cache_key",
)


@dataclass(frozen=True)
class Library:
    """One contender: where it is installed, how it is configured, which Redis db it owns."""

    id: str
    label: str
    venv: str
    settings: str
    #: The distribution whose version the report names (None: plain Django).
    dist: str | None
    #: pip requirements of its venv besides Django (the driver's venv is made by bench.sh).
    requirements: tuple[str, ...] = ()
    redis_db: int | None = None
    #: False for in-process caches: several processes would each have their own cache.
    shared: bool = True
    #: True for a library on the Redis Cluster (``FRESHCACHE_TEST_CLUSTER_URL``) rather than a
    #: database number of the single Redis: it has no ``redis_db`` (a cluster has db 0 only),
    #: runs only with ``--backend cluster`` and owns the whole cluster while it runs.
    cluster: bool = False

    @property
    def uses_redis(self) -> bool:
        return self.redis_db is not None or self.cluster

    @property
    def redis_label(self) -> str | None:
        """Where its cache lives, for the results: ``db 3``, ``cluster`` or None (no Redis)."""
        if self.cluster:
            return "cluster"
        return None if self.redis_db is None else f"db {self.redis_db}"


_COMMON = ("psycopg[binary]>=3.1", "hiredis>=2.0")

LIBRARIES: tuple[Library, ...] = (
    Library("none", "no cache", ".venv-bench", "benchmarks.settings.none", None),
    Library(
        "cacheops",
        "cacheops",
        ".venv-bench-cacheops",
        "benchmarks.settings.cacheops",
        "django-cacheops",
        ("django-cacheops", *_COMMON),
        redis_db=1,
    ),
    Library(
        "cachalot",
        "cachalot",
        ".venv-bench-cachalot",
        "benchmarks.settings.cachalot",
        "django-cachalot",
        ("django-cachalot", "redis>=4.0", *_COMMON),
        redis_db=2,
    ),
    Library(
        "freshcache",
        "freshcache (Redis)",
        ".venv-bench",
        "benchmarks.settings.freshcache_redis",
        "django-freshcache",
        redis_db=3,
    ),
    Library(
        "freshcache-locmem",
        "freshcache (in-process)",
        ".venv-bench",
        "benchmarks.settings.freshcache_locmem",
        "django-freshcache",
        shared=False,
    ),
    Library(
        "freshcache-cluster",
        "freshcache (Redis Cluster)",
        ".venv-bench",
        "benchmarks.settings.freshcache_cluster",
        "django-freshcache",
        cluster=True,
    ),
)

#: The libraries each ``--backend`` (``make bench BACKEND=...``) runs when ``--libs`` is not
#: given. The default run leaves the cluster out; the cluster run compares freshcache on the
#: cluster with the same freshcache on one Redis server and with no cache, in one run.
BACKENDS: dict[str, tuple[str, ...]] = {
    "redis": tuple(lib.id for lib in LIBRARIES if not lib.cluster),
    "cluster": ("none", "freshcache", "freshcache-cluster"),
}


@dataclass
class MixedConfig:
    workers: list[int] = field(default_factory=lambda: [1, 2, 4])
    write_ratios: list[float] = field(default_factory=lambda: [0.01, 0.10, 0.50])
    #: Seconds per round of a cell, of which ``warmup`` is not measured (stale reads are counted
    #: throughout). Each cell runs ``rounds`` times, the libraries taking turns round by round,
    #: and reports the rounds' medians: one round disturbed by the machine then moves nothing.
    duration: float = 5.5
    warmup: float = 1.5
    rounds: int = 3
    zipf_s: float = 1.1
    #: Share of reads verified against the database, with the cache bypassed.
    check_rate: float = 0.25
    #: The cell whose Redis memory is reported, and rerun ``long_factor`` times longer with LONG=1.
    memory_cell: tuple[int, float] = (2, 0.10)
    long: bool = False
    long_factor: int = 10


@dataclass
class Config:
    quick: bool = False
    rows: int = 10_000
    categories: int = 50
    #: Timed runs per operation, split into ``rounds`` batches interleaved across libraries.
    iterations: int = 2000
    warmup: int = 200
    rounds: int = 5
    invalidate_keys: int = 10_000
    invalidate_repeats: int = 2
    mixed: MixedConfig = field(default_factory=MixedConfig)
    #: ``redis`` (one server, a database number per library) or ``cluster`` (see BACKENDS).
    backend: str = "redis"
    #: The micro operations this run times, in order (a subset of MICRO_OPS).
    micro_ops: list[str] = field(default_factory=lambda: list(MICRO_OPS))
    #: CPU per operation (benchmarks.cost): operations measured per write ratio, after a
    #: warm-up, in ``cost_rounds`` rounds the libraries take turns in (0 skips it).
    cost_ops: int = 1500
    cost_warmup: int = 300
    cost_rounds: int = 2

    @classmethod
    def make(cls, *, quick: bool = False, long: bool = False, backend: str = "redis") -> Config:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if backend == "cluster":
            return cls._cluster(quick=quick, long=long)
        if not quick:
            return cls(mixed=MixedConfig(long=long))
        return cls._quick(long=long)

    @classmethod
    def _quick(cls, *, long: bool, **overrides: Any) -> Config:
        return cls(
            quick=True,
            iterations=200,
            warmup=100,
            rounds=2,
            invalidate_keys=2000,
            invalidate_repeats=1,
            cost_ops=300,
            cost_warmup=100,
            cost_rounds=1,
            mixed=MixedConfig(
                workers=[1, 4],
                write_ratios=[0.01, 0.50],
                duration=2.0,
                warmup=0.5,
                rounds=1,
                memory_cell=(4, 0.01),
                long=long,
            ),
            **overrides,
        )

    @classmethod
    def _cluster(cls, *, quick: bool, long: bool) -> Config:
        """The cluster run: every mixed cell, shorter, and the micro operations that depend on
        the backend (the cache key alone does not), with fewer runs: under ten minutes."""
        ops = [op for op in MICRO_OPS if op != "cache_key"]
        if quick:
            return cls._quick(long=long, backend="cluster", micro_ops=ops)
        return cls(
            iterations=1000,
            rounds=4,
            invalidate_keys=5000,
            invalidate_repeats=1,
            mixed=MixedConfig(duration=6.0, warmup=1.5, rounds=1, long=long),
            backend="cluster",
            micro_ops=ops,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        raw: dict[str, Any] = json.loads(text)
        mixed = raw.pop("mixed")
        mixed.setdefault("rounds", 1)  # results from before rounds existed
        mixed["memory_cell"] = tuple(mixed["memory_cell"])
        raw.setdefault("cost_rounds", 0)  # results from before CPU per operation was measured
        return cls(**raw, mixed=MixedConfig(**mixed))


def library(lib_id: str) -> Library:
    for lib in LIBRARIES:
        if lib.id == lib_id:
            return lib
    raise KeyError(f"unknown library {lib_id!r}; known: {[lib.id for lib in LIBRARIES]}")
