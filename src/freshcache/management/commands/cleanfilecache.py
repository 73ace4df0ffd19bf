"""``manage.py cleanfilecache [path]``: remove expired files of the file-based cache."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from freshcache.simple import FileCache, file_cache


class Command(BaseCommand):
    help = "Remove expired entries of freshcache's file cache (FRESHCACHE_FILE_CACHE_DIR)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", help="the cache directory (default: the setting)")

    def handle(self, *args: Any, **options: Any) -> None:
        target = FileCache(options["path"]) if options["path"] else file_cache
        removed = target.clean()
        self.stdout.write(f"removed {removed} expired file(s) from {target.path}")
