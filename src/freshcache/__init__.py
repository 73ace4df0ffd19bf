"""freshcache: cache Django ORM reads, functions, views and templates; never serve stale data.

Every cached value carries the stamps of what it read and is served only while they are all
unchanged; writes delete the stamps they match. See docs/how-it-works.md.
"""

from __future__ import annotations

from freshcache.declarative import BatchCacheQuery, InstanceCache, QuerysetCache
from freshcache.decorators import cached_as, cached_view_as
from freshcache.exceptions import (
    BackendError,
    FreshcacheError,
    ImproperlyConfigured,
    UncacheableQuery,
)
from freshcache.fallback import bump_version
from freshcache.fragments import invalidate_fragment
from freshcache.invalidation import (
    invalidate_all,
    invalidate_model,
    invalidate_obj,
    no_invalidation,
)
from freshcache.managers import CachedManager, ModelCacheManager, NotInt
from freshcache.simple import CacheMiss, FileCache, cache, file_cache

__version__ = "0.1.0.dev0"

#: The seed's own spelling (``class ParticipationCacheManager(ModelCacheManger)``), so its
#: examples run as written.
ModelCacheManger = ModelCacheManager
cached = cache.cached
cached_view = cache.cached_view

__all__ = [
    "BackendError",
    "BatchCacheQuery",
    "CacheMiss",
    "CachedManager",
    "FileCache",
    "FreshcacheError",
    "ImproperlyConfigured",
    "InstanceCache",
    "ModelCacheManager",
    "ModelCacheManger",
    "NotInt",
    "QuerysetCache",
    "UncacheableQuery",
    "__version__",
    "bump_version",
    "cache",
    "cached",
    "cached_as",
    "cached_view",
    "cached_view_as",
    "file_cache",
    "invalidate_all",
    "invalidate_fragment",
    "invalidate_model",
    "invalidate_obj",
    "no_invalidation",
]
