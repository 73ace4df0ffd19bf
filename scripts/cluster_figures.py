"""Key distribution and memory on a Redis Cluster after the benchmark's mixed workload.

    scripts/with-services.sh .venv/bin/python scripts/cluster_figures.py [--ops 20000]

Runs the read/write mix of benchmarks/mixed.py (get by pk 40%, get by slug 40%, a category's
sum 20%; 10% writes; items drawn from a Zipf distribution) in one process on the private
PostgreSQL and the private cluster (FRESHCACHE_TEST_PG_*, FRESHCACHE_TEST_CLUSTER_URL), then
prints, as Markdown for docs/scaling-out.md, the keys each primary holds by kind and the memory
(``MEMORY USAGE``) per cached value, per stamp and per registry.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CATEGORIES = 50
ITEMS = 5000
WRITE_RATIO = 0.10
ZIPF_S = 1.1


def configure() -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="cluster-figures",
        USE_TZ=True,
        INSTALLED_APPS=["freshcache", "benchmarks.benchapp"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": os.environ.get("FRESHCACHE_TEST_PG_NAME", "freshcache"),
                "USER": os.environ.get("FRESHCACHE_TEST_PG_USER", "postgres"),
                "HOST": os.environ["FRESHCACHE_TEST_PG_HOST"],
                "PORT": os.environ["FRESHCACHE_TEST_PG_PORT"],
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        FRESHCACHE_BACKEND="cluster",
        FRESHCACHE_CLUSTER=os.environ["FRESHCACHE_TEST_CLUSTER_URL"],
        FRESHCACHE_DEFAULTS={"timeout": 3600},
        FRESHCACHE={"benchapp.*": {"ops": "all"}},
    )
    django.setup()


def populate() -> None:
    from benchmarks.benchapp.models import Category, Item
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    Item.objects.all().delete()
    Category.objects.all().delete()
    categories = Category.objects.bulk_create(
        Category(name=f"Category {i}", slug=f"category-{i}") for i in range(CATEGORIES)
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    Item.objects.bulk_create(
        Item(
            slug=f"item-{i}",
            title=f"Item {i}",
            category=categories[i % CATEGORIES],
            price=Decimal("9.99"),
            stock=i % 17,
            created=now,
        )
        for i in range(ITEMS)
    )


def workload(ops: int) -> None:
    from benchmarks.benchapp.models import Item
    from django.db.models import Sum

    rng = random.Random(7)
    slugs = dict(Item.objects.nocache().values_list("id", "slug"))
    ids = sorted(slugs)
    random.Random(99).shuffle(ids)
    weights = [1 / rank**ZIPF_S for rank in range(1, len(ids) + 1)]
    picks = rng.choices(ids, weights=weights, k=ops)
    for n, pk in enumerate(picks):
        roll = rng.random()
        if roll < WRITE_RATIO:
            item = Item.objects.nocache().get(pk=pk)
            item.version = n
            item.save()
        elif roll < WRITE_RATIO + 0.36:
            Item.objects.get(pk=pk)
        elif roll < WRITE_RATIO + 0.72:
            Item.objects.get(slug=slugs[pk])
        else:
            category_id = Item.objects.get(pk=pk).category_id
            Item.objects.filter(category_id=category_id).aggregate(Sum("version"))


def kind_of(key: str, prefix: str) -> str:
    rest = key[len(prefix) :]
    if rest == "g":
        return "global epoch"
    return {"q": "cached values", "s": "stamps", "r": "registries"}.get(rest[:1], "other")


def figures() -> str:
    from redis.cluster import RedisCluster

    from freshcache.backends import get_backend

    client: RedisCluster = get_backend().client  # type: ignore[attr-defined]
    prefix = "fc:"
    per_node: dict[str, Counter[str]] = defaultdict(Counter)
    memory: dict[str, list[int]] = defaultdict(list)
    for node in sorted(client.get_primaries(), key=lambda n: n.name):
        connection = client.get_redis_connection(node)
        for raw in connection.scan_iter(f"{prefix}*", count=1000):
            key = raw.decode()
            kind = kind_of(key, prefix)
            per_node[node.name][kind] += 1
            if len(memory[kind]) < 2000:
                memory[kind].append(int(connection.memory_usage(key, samples=0) or 0))
    kinds = ["cached values", "stamps", "registries", "global epoch"]
    nodes = sorted(per_node)
    totals = {kind: sum(per_node[n][kind] for n in nodes) for kind in kinds}
    all_keys = sum(totals.values())
    lines = ["| primary | " + " | ".join(kinds) + " | all keys | share |"]
    lines.append("|---" * (len(kinds) + 3) + "|")
    for i, node in enumerate(nodes, 1):
        counts = [per_node[node][kind] for kind in kinds]
        share = 100 * sum(counts) / all_keys if all_keys else 0
        cells = " | ".join(str(c) for c in counts)
        lines.append(f"| node {i} | {cells} | {sum(counts)} | {share:.1f}% |")
    cells = " | ".join(str(totals[k]) for k in kinds)
    lines.append(f"| **total** | {cells} | {all_keys} | 100% |")
    lines.append("")
    lines.append("| key kind | mean bytes (`MEMORY USAGE`) | median | keys measured |")
    lines.append("|---|---|---|---|")
    for kind in kinds:
        sizes = memory[kind]
        if sizes:
            mean = statistics.mean(sizes)
            lines.append(f"| {kind} | {mean:.0f} | {statistics.median(sizes):.0f} | {len(sizes)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20000, help="operations of the mix")
    args = parser.parse_args()
    configure()
    from freshcache.backends import get_backend

    get_backend().client.flushdb(target_nodes="primaries")  # type: ignore[attr-defined]
    populate()
    workload(args.ops)
    print(figures())


if __name__ == "__main__":
    main()
