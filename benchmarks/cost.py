"""CPU per operation: where the mixed workload's operations spend the machine's cores.

With more workers than cores the mixed workload is bound by CPU, not by waiting, and a
library's throughput there follows the CPU its operations cost: in its own process, in its
PostgreSQL backend and in Redis. This runs the mixed workload's operation mix (the same reads,
the same Zipf distribution, writes that ``save()`` a loaded item) in the library's process
alone, one operation at a time, and measures the three:

* the process: ``time.process_time()``;
* PostgreSQL: the ``utime + stime`` of the connection's backend, from ``/proc`` (the server is on
  this machine; None otherwise);
* Redis: ``used_cpu_user + used_cpu_sys`` of ``INFO cpu``, summed over the primaries of a
  cluster. The server is shared with the other libraries' databases, but they are idle while
  one library runs.

Writes change ``stock``, not ``version``: the mixed workload's stale-read check relies on
versions that only grow, drawn from its own counter.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from benchmarks.mixed import Zipf, read_answer, read_kind

__all__ = ["measure"]


def _backend_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu(target: Any) -> float | None:
    if target is None:
        return None
    total = 0.0
    for _, node in target.primaries():
        info = node.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def measure(
    spec: dict[str, Any],
    write_ratio: float,
    ops: int,
    warmup: int,
    redis_url: str | None,
    cluster: bool = False,
) -> dict[str, Any]:
    """Microseconds of CPU per operation (process, PostgreSQL, Redis) and of wall time."""
    from django.db import connection

    from benchmarks.benchapp.models import Item
    from benchmarks.servers import RedisTarget

    target = RedisTarget(redis_url, cluster) if redis_url is not None else None
    if target is not None:
        target.flush()
    rng = random.Random(7919 + int(write_ratio * 1000))
    pick = Zipf(spec["rows"], spec["zipf_s"], rng)
    categories: int = spec["categories"]

    def operation() -> None:
        pk = pick()
        if rng.random() < write_ratio:
            obj = Item.objects.get(pk=pk)
            obj.stock += 1
            obj.save()
            return
        read_answer(read_kind(rng.random()), pk, categories)

    try:
        for _ in range(warmup):
            operation()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = int(cursor.fetchone()[0])
        pg0, redis0 = _backend_cpu(backend), _redis_cpu(target)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(ops):
            operation()
        wall, client = time.perf_counter() - t0, time.process_time() - c0
        pg1, redis1 = _backend_cpu(backend), _redis_cpu(target)
    finally:
        if target is not None:
            target.flush()
            target.close()

    def per_op(seconds: float | None) -> float | None:
        return None if seconds is None else seconds / ops * 1e6

    return {
        "write_ratio": write_ratio,
        "ops": ops,
        "wall_us": per_op(wall),
        "client_us": per_op(client),
        "postgres_us": per_op(None if pg0 is None or pg1 is None else pg1 - pg0),
        "redis_us": per_op(None if redis0 is None or redis1 is None else redis1 - redis0),
    }
