"""What every library's settings share: the database, the models app, no middleware."""

from __future__ import annotations

import os

from benchmarks.config import PREPARE_THRESHOLD

SECRET_KEY = "freshcache-benchmarks-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = ["benchmarks.benchapp"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
        "USER": os.environ.get("BENCH_PG_USER", "postgres"),
        "NAME": os.environ.get("BENCH_DB_NAME", "bench"),
        "CONN_MAX_AGE": None,
        # psycopg may prepare statements run this often on a connection (Django turns that
        # off unless asked, for PgBouncer's sake). The same for every library; Django's own
        # cursor inlines values and prepares nothing, freshcache prepares its own writes and
        # fills (see docs/production.md). The micro suite also times save() with it off.
        "OPTIONS": {"prepare_threshold": PREPARE_THRESHOLD},
    }
}

#: The library's own Redis database (each library gets its own number).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Seconds a cached read lives, the same for every library.
CACHE_TIMEOUT = 3600

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
