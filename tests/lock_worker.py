"""A separate process for the dog-pile test: it calls one cached function at a barrier."""

from __future__ import annotations

import time
from typing import Any


def run(redis_url: str, counter_key: str, barrier: Any, results: Any) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="lock-test",
        INSTALLED_APPS=["freshcache"],
        DATABASES={},
        FRESHCACHE_BACKEND="redis",
        FRESHCACHE_REDIS=redis_url,
        FRESHCACHE_PREFIX="locktest:",
    )
    django.setup()
    import redis

    from freshcache import cached_as

    client = redis.Redis.from_url(redis_url)

    @cached_as(timeout=60, lock=True)
    def expensive() -> int:
        n = int(client.incr(counter_key))
        time.sleep(0.5)  # long enough that every other process arrives while it runs
        return n

    barrier.wait()
    results.put(expensive())
