"""Processes for the killed-worker fault: one dies holding the dog-pile lock in the middle of a
store, another must then write and read fresh data without waiting past the lock's TTL."""

from __future__ import annotations

import time
from typing import Any


def _setup(redis_url: str, db_name: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="faults",
        INSTALLED_APPS=["freshcache", "tests.propapp"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_name}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        FRESHCACHE_BACKEND="redis",
        FRESHCACHE_REDIS=redis_url,
        FRESHCACHE={"propapp.*": {"ops": "all", "timeout": 60, "lock": True}},
        FRESHCACHE_LOCK_TIMEOUT=2,
    )
    django.setup()


def prepare(redis_url: str, db_name: str) -> None:
    _setup(redis_url, db_name)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tests.propapp.models import Team

    Team.objects.create(name="red", budget=1)


def hold_and_die(redis_url: str, db_name: str, ready: Any) -> None:
    _setup(redis_url, db_name)
    from freshcache.store import store

    def stuck(*args: Any, **kwargs: Any) -> bool:
        ready.set()  # the rows are read, the lock is held: now we get killed
        time.sleep(600)
        return False

    store.save = stuck  # type: ignore[method-assign]
    from tests.propapp.models import Team

    list(Team.objects.filter(name="red").values_list("budget", flat=True))


def survivor(redis_url: str, db_name: str, out: Any) -> None:
    _setup(redis_url, db_name)
    from tests.propapp.models import Team

    Team.objects.filter(name="red").update(budget=2)
    started = time.monotonic()
    budgets = list(Team.objects.filter(name="red").values_list("budget", flat=True))
    again = list(Team.objects.filter(name="red").values_list("budget", flat=True))
    out.put((budgets, again, time.monotonic() - started))
