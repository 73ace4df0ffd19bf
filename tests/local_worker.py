"""A separate process holding a local_get entry, to see it dropped through the channel."""

from __future__ import annotations

import time
from typing import Any


def run(redis_url: str, ready: Any, results: Any) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="local-test",
        INSTALLED_APPS=["freshcache"],
        DATABASES={},
        FRESHCACHE_BACKEND="redis",
        FRESHCACHE_REDIS=redis_url,
        FRESHCACHE={"*.*": {"timeout": 60, "local_get": True}},
    )
    django.setup()
    from freshcache.local import local_gets

    deadline = time.monotonic() + 10
    while local_gets.get("warm-up") is None and not local_gets._listening:
        if time.monotonic() > deadline:
            results.put("never subscribed")
            return
        time.sleep(0.01)
    local_gets.put("entry", ("row",), ["stamp-a", "stamp-b"], local_gets.seq)
    results.put(local_gets.get("entry"))
    ready.set()
    deadline = time.monotonic() + 10
    while local_gets.get("entry") is not None:
        if time.monotonic() > deadline:
            results.put("still there")
            return
        time.sleep(0.005)
    results.put("dropped")
