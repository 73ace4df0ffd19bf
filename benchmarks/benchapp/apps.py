from __future__ import annotations

from django.apps import AppConfig


class BenchappConfig(AppConfig):
    name = "benchmarks.benchapp"
    label = "benchapp"
    default_auto_field = "django.db.models.AutoField"
