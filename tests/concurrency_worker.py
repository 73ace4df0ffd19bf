"""Worker processes for the concurrency suite: their own Django, one PostgreSQL, one Redis.

Times come from ``time.monotonic()``, one clock for every process on the machine, so a read can
be compared with the writes that committed before it began.
"""

from __future__ import annotations

import random
import time
from typing import Any

WRITERS_ROWS = 4  # rows per writer: "w<writer>-<row>"


def setup(db: dict[str, Any], redis_url: str) -> None:
    import django
    from django.conf import settings

    cluster = redis_url.startswith("redis+cluster:")
    sentinel = None
    if redis_url.startswith("sentinel://"):  # sentinel://host:port,host:port/service
        where, service = redis_url.removeprefix("sentinel://").split("/")
        locations = [(h, int(p)) for h, p in (a.split(":") for a in where.split(","))]
        sentinel = {"locations": locations, "service_name": service, "socket_timeout": 1}
    settings.configure(
        SECRET_KEY="concurrency",
        USE_TZ=True,
        INSTALLED_APPS=["freshcache", "tests.propapp"],
        DATABASES={"default": db},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        # A redis+cluster:// URL runs the same race on a Redis Cluster.
        FRESHCACHE_BACKEND="cluster" if cluster else "redis",
        FRESHCACHE_CLUSTER=redis_url if cluster else None,
        FRESHCACHE_REDIS=None if cluster or sentinel else redis_url,
        FRESHCACHE_SENTINEL=sentinel,
        FRESHCACHE_DEGRADE_ON_FAILURE=sentinel is not None,  # the failover test
        FRESHCACHE={"propapp.*": {"ops": "all", "timeout": 300}},
    )
    django.setup()


def migrate(db: dict[str, Any], redis_url: str) -> None:
    setup(db, redis_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tests.propapp.models import Person, Team

    teams = [Team.objects.create(name=n) for n in ("red", "blue", "green")]
    for writer in range(2):
        for row in range(WRITERS_ROWS):
            Person.objects.create(name=f"w{writer}-{row}", team=teams[row % 3], score=0)


def writer(
    db: dict[str, Any], redis_url: str, me: int, rounds: int, out: Any, stop: Any = None
) -> None:
    """Bump this writer's rows in transactions, move them between teams, and check that its
    own next cached read sees each write (read-your-writes). Ends after ``rounds`` or when
    the ``stop`` event is set."""
    setup(db, redis_url)
    from django.db import transaction

    from tests.propapp.models import Person, Team

    rng = random.Random(me)
    teams = list(Team.objects.nocache().values_list("id", flat=True))
    commits: list[tuple[str, int, float]] = []
    violations: list[str] = []
    for version in range(1, rounds + 1):
        if stop is not None and stop.is_set():
            break
        name = f"w{me}-{rng.randrange(WRITERS_ROWS)}"
        with transaction.atomic():
            person = Person.objects.select_for_update().get(name=name)
            person.score = version
            person.team_id = rng.choice(teams)
            person.save()
        commits.append((name, version, time.monotonic()))  # after commit and invalidation
        seen = Person.objects.get(name=name).score
        if seen != version:
            violations.append(f"read-your-writes: {name} wrote {version}, read {seen}")
    out.put(("writer", me, commits, violations))


def reader(
    db: dict[str, Any], redis_url: str, me: int, rounds: int, out: Any, stop: Any = None
) -> None:
    """Read every row through the cache, recording when each read began and what it saw."""
    setup(db, redis_url)
    from tests.propapp.models import Person

    names = [f"w{w}-{r}" for w in range(2) for r in range(WRITERS_ROWS)]
    reads: list[tuple[str, float, int]] = []
    for _ in range(rounds):
        if stop is not None and stop.is_set():
            break
        for name in names:
            began = time.monotonic()
            reads.append((name, began, Person.objects.get(name=name).score))
        # other shapes too, so the cache holds lists that writes must invalidate
        list(Person.objects.filter(team__name="red").order_by("id").values_list("name", "score"))
        Person.objects.filter(score__gte=1).count()
    out.put(("reader", me, reads, []))
