"""freshcache with its in-process backend (no Redis): one process, nothing shared."""

from __future__ import annotations

from benchmarks.settings.base import *  # noqa: F403
from benchmarks.settings.base import CACHE_TIMEOUT, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "freshcache"]
FRESHCACHE_BACKEND = "locmem"
FRESHCACHE_DEFAULTS = {"timeout": CACHE_TIMEOUT}
FRESHCACHE = {"benchapp.*": {"ops": "all"}}
