"""The time-based cache: ``cache.get/set/delete``, ``@cached`` and ``@cached_view``.

For values that are not derived from the database, or that may be a little old: no stamps, only
a timeout. ``cache`` stores in freshcache's backend (Redis or in-process); ``file_cache`` in
files under a directory (``manage.py cleanfilecache`` removes the expired ones). Values are
pickled and signed like every other freshcache value.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import inspect
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from freshcache.backends import get_backend
from freshcache.conf import key_prefix, settings
from freshcache.exceptions import BackendError, PayloadError, SerializationError
from freshcache.keys import call_key, func_name
from freshcache.serializers import dumps_signed, loads_signed
from freshcache.signals import cache_read

__all__ = ["CacheKey", "CacheMiss", "FileCache", "RedisCache", "cache", "file_cache"]

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_TIMEOUT = 60 * 60
TMP_PREFIX = ".tmp-"


class CacheMiss(Exception):
    """Raised by ``get`` when the key holds nothing (usable: ``None`` is a valid value)."""


class CacheKey(str):
    """What ``.key(*args)`` of a ``cached``/``cached_view`` function returns: the key (a string,
    for ``cache.get(key)``) with django-cacheops' methods bound to its cache and timeout."""

    _cache: BaseCache
    _timeout: int | None

    def __new__(cls, key: str, cache: BaseCache, timeout: int | None) -> CacheKey:
        self = super().__new__(cls, key)
        self._cache, self._timeout = cache, timeout
        return self

    def get(self) -> Any:
        """The value stored under this key; ``CacheMiss`` when there is none."""
        return self._cache.get(self)

    def set(self, value: Any) -> None:
        self._cache.set(self, value, self._timeout)

    def delete(self) -> None:
        self._cache.delete(self)


class BaseCache(abc.ABC):
    """``get``/``set``/``delete`` plus the ``cached`` and ``cached_view`` decorators."""

    @abc.abstractmethod
    def get(self, key: str) -> Any:
        """The value stored under ``key``; ``CacheMiss`` when there is none."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        """Store ``value`` for ``timeout`` seconds (one hour when None)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Forget ``key``."""

    def cached(
        self,
        timeout: int | None = None,
        extra: Any = None,
        key_func: Callable[..., Any] | None = None,
    ) -> Callable[[F], F]:
        """Cache a function's result for ``timeout`` seconds, keyed by its arguments."""
        return self._decorator(timeout, extra, key_func, "t", None)

    def cached_view(
        self,
        timeout: int | None = None,
        extra: Any = None,
        key_func: Callable[..., Any] | None = None,
    ) -> Callable[[F], F]:
        """Cache a view's 200 responses to GET and HEAD for ``timeout`` seconds, keyed by the
        path and query string (plus ``extra(request, ...)``)."""
        from freshcache.views import (
            cacheable_response,
            request_key,
            view_extra,
            view_wrapper,
        )

        def parts(request: HttpRequest, *args: Any, **kwargs: Any) -> tuple[Any, dict]:
            return (request_key(request), view_extra(extra, request, *args, **kwargs)), {}

        def accept(response: Any, args: tuple[Any, ...]) -> bool:
            return cacheable_response(response, args[0] if args else None, extra is not None)

        inner = self._decorator(timeout, None, key_func, "tv", parts, accept)

        def decorate(view: F) -> F:
            return view_wrapper(view, inner(view))

        return decorate

    def _decorator(
        self,
        timeout: int | None,
        extra: Any,
        key_func: Callable[..., Any] | None,
        kind: str,
        parts: Callable[..., tuple[Any, dict]] | None,
        accept: Callable[[Any, tuple[Any, ...]], bool] | None = None,
    ) -> Callable[[F], F]:
        cache = self

        def decorate(func: F) -> F:
            name = func_name(func)

            def key(*args: Any, **kwargs: Any) -> CacheKey:
                if parts is not None:
                    args, kwargs = parts(*args, **kwargs)
                extra_value = extra(*args, **kwargs) if callable(extra) else extra
                if key_func is not None:
                    key_parts: tuple[Any, ...] = (str(key_func(func, args, kwargs, extra_value)),)
                else:
                    key_parts = (args, kwargs, extra_value)
                return CacheKey(call_key("", kind, name, key_parts), cache, timeout)

            def lookup(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str | None, Any]:
                if not settings.ENABLED:
                    return None, CacheMiss
                try:
                    k = key(*args, **kwargs)
                except TypeError:
                    return None, CacheMiss
                try:
                    value = cache.get(k)
                except CacheMiss:
                    cache_read.send(sender=None, func=func, hit=False)
                    return k, CacheMiss
                cache_read.send(sender=None, func=func, hit=True)
                return k, value

            def keep(k: str | None, result: Any, args: tuple[Any, ...]) -> None:
                if k is not None and timeout != 0 and (accept is None or accept(result, args)):
                    cache.set(k, result, timeout)

            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    k, value = await sync_to_async(lookup)(args, kwargs)
                    if value is not CacheMiss:
                        return value
                    result = await func(*args, **kwargs)
                    await sync_to_async(keep)(k, result, args)
                    return result

                wrapper: Any = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    k, value = lookup(args, kwargs)
                    if value is not CacheMiss:
                        return value
                    result = func(*args, **kwargs)
                    keep(k, result, args)
                    return result

                wrapper = sync_wrapper

            wrapper.key = key
            wrapper.invalidate = lambda *args, **kwargs: cache.delete(key(*args, **kwargs))
            return wrapper

        return decorate


class RedisCache(BaseCache):
    """The time-based cache in freshcache's backend (whatever ``FRESHCACHE_BACKEND`` selects)."""

    def _key(self, key: str) -> str:
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return f"{key_prefix('default')}t:{digest}"

    def get(self, key: str) -> Any:
        if not settings.ENABLED:
            raise CacheMiss(key)
        try:
            (data,) = get_backend().get_many([self._key(key)])
        except BackendError:
            if settings.DEGRADE_ON_FAILURE:
                raise CacheMiss(key) from None
            raise
        if data is None:
            raise CacheMiss(key)
        try:
            return loads_signed(data)
        except PayloadError:
            raise CacheMiss(key) from None

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        if not settings.ENABLED:
            return
        try:
            data = dumps_signed(value)
        except SerializationError:
            return
        try:
            get_backend().set_many({self._key(key): data}, timeout or DEFAULT_TIMEOUT)
        except BackendError:
            if not settings.DEGRADE_ON_FAILURE:
                raise

    def delete(self, key: str) -> None:
        try:
            get_backend().delete_many([self._key(key)])
        except BackendError:
            if not settings.DEGRADE_ON_FAILURE:
                raise


class FileCache(BaseCache):
    """The time-based cache in files: ``<path>/<2 hex>/<hash>``, each holding its expiry time.

    Writes go to a temporary file renamed into place, so a reader never sees half a value.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None

    @property
    def path(self) -> Path:
        if self._path is not None:
            return self._path
        from django.conf import settings as django_settings

        configured = getattr(django_settings, "FRESHCACHE_FILE_CACHE_DIR", None)
        return Path(configured or Path(tempfile.gettempdir()) / "freshcache")

    def _file(self, key: str) -> Path:
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return self.path / digest[:2] / digest

    def get(self, key: str) -> Any:
        if not settings.ENABLED:
            raise CacheMiss(key)
        try:
            raw = self._file(key).read_bytes()
            expires, data = raw.split(b"\n", 1)
            if float(expires) < time.time():
                raise CacheMiss(key)
            return loads_signed(data)
        except (OSError, ValueError, PayloadError):
            raise CacheMiss(key) from None

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        if not settings.ENABLED:
            return
        try:
            data = dumps_signed(value)
        except SerializationError:
            return
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        expires = time.time() + (timeout or DEFAULT_TIMEOUT)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TMP_PREFIX)
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"%.3f\n" % expires + data)
        os.replace(tmp, target)

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def clean(self) -> int:
        """Remove expired and unreadable files; return how many went."""
        removed = 0
        now = time.time()
        if not self.path.is_dir():
            return 0
        for file in self.path.glob("*/*"):
            if file.name.startswith(TMP_PREFIX) and now - file.stat().st_mtime < 3600:
                continue  # a write in progress; left over from a crash only after an hour
            try:
                with file.open("rb") as handle:
                    expires = float(handle.readline())
            except (OSError, ValueError):
                expires = 0.0
            if expires < now:
                file.unlink(missing_ok=True)
                removed += 1
        return removed


cache = RedisCache()
file_cache = FileCache()
