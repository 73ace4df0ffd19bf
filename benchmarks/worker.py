"""One library's process, in that library's virtualenv: its database, then timing on request.

    python -m benchmarks.worker --lib cacheops --config .results/config.json

The driver (:mod:`benchmarks.run`) starts one per library, sets ``BENCH_PG_*``,
``BENCH_DB_NAME``, ``BENCH_REDIS_URL`` (a cluster node URL for a cluster library) and
``BENCH_SERVER_REDIS_URL`` (asked for the server's version only), and then sends JSON commands
on stdin, one per line (``micro``, ``check``, ``floor``, ``cost``, ``mixed``, ``quit``); each
gets one JSON line back on stdout (``{"result": ...}`` or ``{"error": traceback}``). All
workers live through the whole run and take turns, so that whatever else the machine does
meanwhile weighs on every library alike.
The PostgreSQL database ``BENCH_DB_NAME`` is dropped and created anew, so every library starts
from the same rows. The library's Redis is emptied at start, before every mixed cell and at
exit: ``FLUSHDB`` of its database, or ``FLUSHALL`` on every primary of the cluster
(:mod:`benchmarks.servers`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import traceback
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.config import Config, Library, library


def pg_params(dbname: str) -> dict[str, Any]:
    return {
        "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
        "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
        "user": os.environ.get("BENCH_PG_USER", "postgres"),
        "dbname": dbname,
    }


def create_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    maintenance = os.environ.get("BENCH_PG_MAINT_DB", "postgres")
    with psycopg.connect(**pg_params(maintenance), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(config: Config) -> None:
    """The same rows for every library: ``config.rows`` items over ``config.categories``."""
    import random

    from django.core.management import call_command
    from django.db import connection

    from benchmarks.benchapp.models import Category, Item

    call_command("migrate", run_syncdb=True, verbosity=0)
    rng = random.Random(7)
    Category.objects.bulk_create(
        Category(id=i, name=f"Category {i}", slug=f"cat-{i}")
        for i in range(1, config.categories + 1)
    )
    epoch = datetime(2024, 1, 1, tzinfo=timezone.utc)
    Item.objects.bulk_create(
        (
            Item(
                id=i,
                slug=f"item-{i}",
                title=f"Item number {i}",
                category_id=1 + (i - 1) % config.categories,
                price=Decimal(rng.randint(100, 99_999)) / 100,
                stock=rng.randint(0, 500),
                active=rng.random() < 0.9,
                created=epoch + timedelta(minutes=i),
            )
            for i in range(1, config.rows + 1)
        ),
        batch_size=2000,
    )
    # Settle the new tables before anything is timed: VACUUM sets the rows' hint bits and the
    # visibility map (else the first reads write pages, and autovacuum wakes up mid-run) and
    # the checkpoint writes the load out, so the first operation timed does not share the two
    # cores with PostgreSQL's background work.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")
        try:
            cursor.execute("CHECKPOINT")
        except Exception as exc:  # not a superuser: the run goes on without it
            print(f"bench: CHECKPOINT refused ({exc}); timings may start noisier", file=sys.stderr)


def flush_redis(url: str | None, cluster: bool = False) -> None:
    if url is None:
        return
    from benchmarks.servers import RedisTarget

    target = RedisTarget(url, cluster)
    target.flush()
    target.close()


def versions(lib: Library) -> dict[str, Any]:
    import django
    from django.db import connection

    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "django": django.get_version(),
        "library": dist(lib.dist) if lib.dist else None,
        "redis_py": dist("redis"),
        "hiredis": dist("hiredis"),
        "psycopg": dist("psycopg"),
        "postgresql": pg.split()[0],
    }
    url = os.environ.get("BENCH_SERVER_REDIS_URL")
    if url:
        import redis

        client = redis.Redis.from_url(url)
        info["redis_server"] = client.info("server")["redis_version"]
        client.close()
    if lib.cluster:
        from benchmarks.servers import RedisTarget

        target = RedisTarget(os.environ["BENCH_REDIS_URL"], cluster=True)
        info["cluster"] = target.describe()
        target.close()
    return info


def handle(
    command: dict[str, Any], micro: Any, spec: dict[str, Any], redis_url: str | None, cluster: bool
) -> Any:
    kind = command["cmd"]
    if kind == "micro":
        return {"samples": micro.batch(command["op"], command["iterations"], command["warmup"])}
    if kind == "check":
        return micro.check(command["op"])
    if kind == "floor":
        return micro.floor_batch(command["op"], command["iterations"], command["warmup"])
    if kind == "cost":
        from benchmarks.cost import measure

        return measure(
            spec, command["write_ratio"], command["ops"], command["warmup"], redis_url, cluster
        )
    if kind == "mixed":
        from django.db import connections

        from benchmarks.mixed import run_cell

        connections.close_all()  # the workload's processes open their own
        return run_cell(
            spec,
            command["workers"],
            command["write_ratio"],
            command["duration"],
            redis_url,
            cluster,
        )
    raise ValueError(f"unknown command {kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lib", required=True)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)

    # The protocol owns stdout; anything else printed goes to stderr with the progress lines.
    channel = sys.stdout
    sys.stdout = sys.stderr
    lib = library(args.lib)
    config = Config.from_json(args.config.read_text())
    redis_url = os.environ["BENCH_REDIS_URL"] if lib.uses_redis else None
    db_name = os.environ["BENCH_DB_NAME"]
    os.environ["DJANGO_SETTINGS_MODULE"] = lib.settings

    create_database(db_name)
    import django

    django.setup()
    from benchmarks.adapters import adapter_for
    from benchmarks.micro import Micro

    seed(config)
    flush_redis(redis_url, lib.cluster)
    micro = Micro(config, adapter_for(lib.id), redis_url, cluster=lib.cluster)
    spec = {
        "pg": pg_params(db_name),
        "rows": config.rows,
        "categories": config.categories,
        "zipf_s": config.mixed.zipf_s,
        "check_rate": config.mixed.check_rate,
        "warmup": config.mixed.warmup,
        "seed": 1,
    }

    def reply(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    reply({"ready": {"versions": versions(lib), "key_api": micro.adapter.key_api}})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        try:
            reply({"result": handle(command, micro, spec, redis_url, lib.cluster)})
        except Exception:
            reply({"error": traceback.format_exc()})
    flush_redis(redis_url, lib.cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
