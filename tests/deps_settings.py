"""Settings for running ``tests/test_dependencies.py`` on its own, without the freshcache app.

The soundness test compares real query results before and after writes, so nothing may cache
or intercept reads: ``pytest tests/test_dependencies.py --ds=tests.deps_settings``.
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tests.depsapp",
]
