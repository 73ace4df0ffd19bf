"""Settings for the test project.

The database and the cache backend come from the environment so that one suite runs against
every combination ``make test`` asks for: ``FRESHCACHE_TEST_DB`` (``sqlite`` or ``postgres``,
with ``FRESHCACHE_TEST_PG_*`` naming the private server) and ``FRESHCACHE_TEST_BACKEND``
(``locmem`` or ``redis``, with ``FRESHCACHE_TEST_REDIS_URL``; or ``cluster``, with
``FRESHCACHE_TEST_CLUSTER_URL``).
"""

from __future__ import annotations

import os

SECRET_KEY = "freshcache-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.messages",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "freshcache",
    "tests.testapp",
    "tests.depsapp",
    "tests.propapp",
    "tests.flashapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

TEST_DB = os.environ.get("FRESHCACHE_TEST_DB", "sqlite")
if TEST_DB == "postgres":
    _pg = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("FRESHCACHE_TEST_PG_NAME", "freshcache"),
        "USER": os.environ.get("FRESHCACHE_TEST_PG_USER", "postgres"),
        "PASSWORD": os.environ.get("FRESHCACHE_TEST_PG_PASSWORD", ""),
        "HOST": os.environ.get("FRESHCACHE_TEST_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("FRESHCACHE_TEST_PG_PORT", "5432"),
    }
    if os.environ.get("FRESHCACHE_TEST_PG_PREPARE"):
        # psycopg prepares every statement it may (freshcache's guarded writes): the matrix
        # runs some combinations this way, the others with Django's default (nothing).
        _pg["OPTIONS"] = {"prepare_threshold": 0}
    DATABASES = {"default": _pg, "other": {**_pg, "TEST": {"NAME": "test_freshcache_other"}}}
else:
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }

TEST_BACKEND = os.environ.get("FRESHCACHE_TEST_BACKEND", "locmem")
if TEST_BACKEND == "cluster":  # the whole suite on the Redis Cluster of scripts/services.sh
    FRESHCACHE_BACKEND = "cluster"
    FRESHCACHE_CLUSTER = os.environ.get("FRESHCACHE_TEST_CLUSTER_URL", "redis://127.0.0.1:7000")
elif TEST_BACKEND == "redis":
    FRESHCACHE_BACKEND = "redis"
    FRESHCACHE_REDIS = os.environ.get("FRESHCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
else:
    FRESHCACHE_BACKEND = "locmem"

FRESHCACHE_DEFAULTS = {"timeout": 60 * 60}
FRESHCACHE = {
    "testapp.*": {"ops": "all"},
    "depsapp.*": {},
    "propapp.*": {"ops": "all"},
    "flashapp.*": {},
    "auth.user": {"ops": "get"},
}
