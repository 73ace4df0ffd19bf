"""Backend selection: one backend per process, built on first use and dropped on settings change.

``FRESHCACHE_BACKEND`` names an engine (``'redis'``, ``'cluster'``, ``'locmem'``) or a dotted
path to a :class:`Backend` subclass with a ``from_settings()`` classmethod; without it the engine
is inferred: ``FRESHCACHE_CLUSTER`` means ``cluster``, a Redis or Sentinel setting means
``redis``, and nothing means the in-process ``locmem`` default.
"""

from __future__ import annotations

import logging
import threading

from django.utils.module_loading import import_string

from freshcache.backends.base import Backend
from freshcache.conf import on_reset, settings
from freshcache.exceptions import ImproperlyConfigured

__all__ = ["Backend", "backend_name", "get_backend", "reset_backend"]

ENGINES = {
    "redis": "freshcache.backends.redis.RedisBackend",
    "cluster": "freshcache.backends.cluster.ClusterBackend",
    "locmem": "freshcache.backends.locmem.LocMemBackend",
}

logger = logging.getLogger("freshcache")
_backend: Backend | None = None
_lock = threading.Lock()


def backend_name() -> str:
    """The engine name or dotted path that the settings select."""
    configured = settings.BACKEND
    if configured:
        return str(configured)
    if settings.CLUSTER:
        return "cluster"
    if settings.REDIS or settings.SENTINEL:
        return "redis"
    return "locmem"


def build_backend() -> Backend:
    name = backend_name()
    if name == "locmem":
        from freshcache.backends.locmem import LocMemBackend
        from freshcache.checks import multiprocess_server

        server = multiprocess_server()
        if server:
            # Workers of pre-forking servers do not run system checks: say it where it bites.
            logger.warning(
                "freshcache uses the in-process backend under %s: writes in one worker do not "
                "invalidate the others; set FRESHCACHE_REDIS",
                server,
            )

        return LocMemBackend(max_entries=settings.LOCMEM_MAX_ENTRIES)
    path = ENGINES.get(name, name)
    if "." not in path:
        raise ImproperlyConfigured(
            f"FRESHCACHE_BACKEND={name!r} is not an engine; use one of "
            f"{sorted(ENGINES)} or a dotted path to a Backend subclass"
        )
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"FRESHCACHE_BACKEND={name!r} cannot be imported: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ImproperlyConfigured(
            f"FRESHCACHE_BACKEND={name!r} must name a freshcache.backends.base.Backend subclass"
        )
    from_settings = getattr(cls, "from_settings", None)
    return from_settings() if from_settings else cls()


def get_backend() -> Backend:
    global _backend
    backend = _backend
    if backend is None:
        with _lock:
            if _backend is None:
                _backend = build_backend()
            backend = _backend
    return backend


@on_reset
def reset_backend() -> None:
    global _backend
    with _lock:
        old, _backend = _backend, None
    if old is not None:
        old.close()
