#!/usr/bin/env python
"""The example site: ``python example/manage.py runserver`` or ``python example/manage.py demo``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    if sys.argv[1:2] == ["runserver"] and "RUN_MAIN" not in os.environ:
        # A fresh checkout serves the catalogue straight away: migrate and seed first.
        execute_from_command_line([sys.argv[0], "migrate", "--verbosity", "0"])
        execute_from_command_line([sys.argv[0], "seed"])
    execute_from_command_line(sys.argv)
