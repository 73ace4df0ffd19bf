"""``manage.py bump_version app | app.Model ...``: after a deploy that changed models' fields."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from freshcache.fallback import bump_version


class Command(BaseCommand):
    help = (
        "Invalidate every declarative cached value (InstanceCache, QuerysetCache, Model.cache, "
        "CachedManager) of the given models ('app.Model') or of every model of an app ('app')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("targets", nargs="+", metavar="target")
        parser.add_argument("--database", default=None, help="only this database alias")

    def handle(self, *args: Any, **options: Any) -> None:
        for target in options["targets"]:
            app_label, _, model_name = target.partition(".")
            try:
                app = apps.get_app_config(app_label)
            except LookupError:
                raise CommandError(f"no installed app {app_label!r} (in {target!r})") from None
            if model_name:
                try:
                    models = [app.get_model(model_name)]
                except LookupError:
                    raise CommandError(f"no model {model_name!r} in app {app.label!r}") from None
            else:
                models = list(app.get_models())
            for model in models:
                bump_version(model, options["database"])
                self.stdout.write(f"bumped the cache version of {model._meta.label}")
