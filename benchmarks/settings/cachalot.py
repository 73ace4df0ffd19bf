"""django-cachalot through Django's built-in RedisCache: it caches every read by itself."""

from __future__ import annotations

from benchmarks.settings.base import *  # noqa: F403
from benchmarks.settings.base import CACHE_TIMEOUT, INSTALLED_APPS, REDIS_URL

INSTALLED_APPS = [*INSTALLED_APPS, "cachalot"]
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
    }
}
CACHALOT_ENABLED = True
CACHALOT_TIMEOUT = CACHE_TIMEOUT
