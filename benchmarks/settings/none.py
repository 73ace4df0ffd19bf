"""The baseline: plain Django, every read goes to PostgreSQL."""

from __future__ import annotations

from benchmarks.settings.base import *  # noqa: F403
