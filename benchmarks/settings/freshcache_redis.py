"""freshcache on Redis, caching every op of the benchmark models."""

from __future__ import annotations

from benchmarks.settings.base import *  # noqa: F403
from benchmarks.settings.base import CACHE_TIMEOUT, INSTALLED_APPS, REDIS_URL

INSTALLED_APPS = [*INSTALLED_APPS, "freshcache"]
FRESHCACHE_BACKEND = "redis"
FRESHCACHE_REDIS = REDIS_URL
FRESHCACHE_DEFAULTS = {"timeout": CACHE_TIMEOUT}
FRESHCACHE = {"benchapp.*": {"ops": "all"}}
