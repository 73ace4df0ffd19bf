"""``manage.py invalidate all | app | app.Model | app.Model.pk``."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from freshcache.invalidation import invalidate_all, invalidate_model, invalidate_obj


class Command(BaseCommand):
    help = (
        "Invalidate cached reads: 'all' (only freshcache's keys), an app label, "
        "'app.Model', or 'app.Model.pk'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("targets", nargs="+", metavar="target")
        parser.add_argument("--database", default="default")

    def handle(self, *targets: str, **options: Any) -> None:
        using = options["database"]
        for target in options["targets"] or targets:
            self._invalidate(target, using)

    def _invalidate(self, target: str, using: str) -> None:
        if target == "all":
            invalidate_all(using)
            self.stdout.write("invalidated everything")
            return
        parts = target.split(".", 2)
        try:
            app = apps.get_app_config(parts[0])
        except LookupError:
            raise CommandError(f"no installed app {parts[0]!r} (in {target!r})") from None
        if len(parts) == 1:
            for model in app.get_models(include_auto_created=True):
                invalidate_model(model, using)
            self.stdout.write(f"invalidated app {app.label}")
            return
        try:
            model = app.get_model(parts[1])
        except LookupError:
            raise CommandError(f"no model {parts[1]!r} in app {app.label!r}") from None
        if len(parts) == 2:
            invalidate_model(model, using)
            self.stdout.write(f"invalidated {model._meta.label}")
            return
        try:
            obj = model._base_manager.using(using).nocache().get(pk=parts[2])
        except (model.DoesNotExist, ValueError):
            raise CommandError(f"no {model._meta.label} with pk {parts[2]!r}") from None
        invalidate_obj(obj, using)
        self.stdout.write(f"invalidated {model._meta.label} {parts[2]}")
