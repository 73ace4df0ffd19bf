"""freshcache: cache Django ORM reads, functions, views and templates; never serve stale data.

Every cached value carries the stamps of what it read and is served only while they are all
unchanged; writes delete the stamps they match. See docs/how-it-works.md.
"""

from __future__ import annotations

from freshcache.exceptions import (
    BackendError,
    FreshcacheError,
    ImproperlyConfigured,
    UncacheableQuery,
)
from freshcache.invalidation import (
    invalidate_all,
    invalidate_model,
    invalidate_obj,
    no_invalidation,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendError",
    "FreshcacheError",
    "ImproperlyConfigured",
    "UncacheableQuery",
    "__version__",
    "invalidate_all",
    "invalidate_model",
    "invalidate_obj",
    "no_invalidation",
]
