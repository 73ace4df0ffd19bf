"""django-cacheops on Redis, caching every op of the benchmark models (its ``'all'`` profile)."""

from __future__ import annotations

from benchmarks.settings.base import *  # noqa: F403
from benchmarks.settings.base import CACHE_TIMEOUT, INSTALLED_APPS, REDIS_URL

INSTALLED_APPS = [*INSTALLED_APPS, "cacheops"]
CACHEOPS_REDIS = REDIS_URL
CACHEOPS_DEFAULTS = {"timeout": CACHE_TIMEOUT}
CACHEOPS = {"benchapp.*": {"ops": "all"}}
CACHEOPS_DEGRADE_ON_FAILURE = False
