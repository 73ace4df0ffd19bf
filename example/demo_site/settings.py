"""The example site: SQLite and freshcache's embedded in-process backend, nothing else needed."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "freshcache-example-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "freshcache",
    "courses",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "demo_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("FRESHCACHE_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

# freshcache: no FRESHCACHE_REDIS, so the in-process backend is used. Cache every read of the
# catalogue for an hour; invalidation is automatic, so the hour is only a memory bound.
FRESHCACHE = {"courses.*": {"ops": "all", "timeout": 60 * 60}}
