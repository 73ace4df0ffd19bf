"""The app config only wires things up: checks, receivers and the Django patches."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate, post_save, pre_save


class FreshcacheConfig(AppConfig):
    name = "freshcache"
    verbose_name = "freshcache"
    default = True

    def ready(self) -> None:
        from freshcache import (
            checks,  # noqa: F401 - registers the system checks
            writethrough,
        )
        from freshcache.install import install

        install()
        self.module.managers.setup()  # import every app's caches.py; give models Model.cache
        post_migrate.connect(_migrated, dispatch_uid="freshcache.post_migrate")
        post_save.connect(writethrough.cache_on_save, dispatch_uid="freshcache.cache_on_save")
        pre_save.connect(writethrough.saving, dispatch_uid="freshcache.writethrough")


def _migrated(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """Migrations change tables under the cache: invalidate every model of the migrated app."""
    from freshcache.invalidation import invalidate_tables

    tables = {model._meta.db_table for model in sender.get_models(include_auto_created=True)}
    invalidate_tables(sorted(tables), using)
