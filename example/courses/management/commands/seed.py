"""``manage.py seed``: the demo catalogue, unless there is one already."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from courses.models import Subject


class Command(BaseCommand):
    help = "Create the demo catalogue (6 subjects x 8 courses x 6 modules) if the site is empty."

    def handle(self, *args: Any, **options: Any) -> None:
        from courses.management.commands.demo import seed

        if not Subject.objects.exists():
            seed()
