"""One library's run, in that library's virtualenv: set up its database, time, write JSON.

    python -m benchmarks.worker --lib cacheops --config run-config.json --out cacheops.json

The driver (:mod:`benchmarks.run`) sets ``BENCH_PG_*``, ``BENCH_DB_NAME``, ``BENCH_REDIS_URL``
and ``BENCH_STATE_REDIS_URL``. The PostgreSQL database ``BENCH_DB_NAME`` is dropped and created
anew, so every library starts from the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.config import Config, Library, library


def progress_for(lib: Library) -> Any:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[bench {lib.id} +{time.monotonic() - started:5.0f}s] {message}", file=sys.stderr)

    return progress


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
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
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
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def flush_redis(url: str | None) -> None:
    if url is None:
        return
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


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
        pg = cursor.fetchone()[0]  # type: ignore[index]
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "django": django.get_version(),
        "library": dist(lib.dist) if lib.dist else None,
        "redis_py": dist("redis"),
        "hiredis": dist("hiredis"),
        "psycopg": dist("psycopg"),
        "postgresql": pg.split()[0],
    }
    url = os.environ.get("BENCH_STATE_REDIS_URL")
    if url:
        import redis

        client = redis.Redis.from_url(url)
        info["redis_server"] = client.info("server")["redis_version"]
        client.close()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lib", required=True)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--phases", default="micro,mixed")
    args = parser.parse_args(argv)

    lib = library(args.lib)
    config = Config.from_json(args.config.read_text())
    phases = set(args.phases.split(","))
    progress = progress_for(lib)
    redis_url = os.environ["BENCH_REDIS_URL"] if lib.uses_redis else None
    db_name = os.environ["BENCH_DB_NAME"]
    os.environ["DJANGO_SETTINGS_MODULE"] = lib.settings

    create_database(db_name)
    import django

    django.setup()
    from django.db import connections

    from benchmarks.adapters import adapter_for

    seed(config)
    flush_redis(redis_url)
    result: dict[str, Any] = {"lib": lib.id, "versions": versions(lib), "micro": None, "mixed": None}
    progress(f"ready: {config.rows} rows in {db_name}, {result['versions']}")

    if "micro" in phases:
        from benchmarks.micro import run_micro

        result["micro"] = run_micro(config, adapter_for(lib.id), redis_url, progress)
    connections.close_all()

    if "mixed" in phases:
        from benchmarks.mixed import run_mixed

        state_url = os.environ["BENCH_STATE_REDIS_URL"]
        flush_redis(state_url)  # versions restart at 0 with this library's fresh database
        spec = {
            "state_url": state_url,
            "pg": pg_params(db_name),
            "rows": config.rows,
            "zipf_s": config.mixed.zipf_s,
            "check_rate": config.mixed.check_rate,
            "warmup": config.mixed.warmup,
            "seed": 1,
        }
        result["mixed"] = run_mixed(config, lib, spec, redis_url, progress)
    flush_redis(redis_url)

    args.out.write_text(json.dumps(result, indent=1))
    progress(f"done, results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
