"""One lazy view of every ``FRESHCACHE_*`` setting, read when used rather than at import.

Reading at use time is what makes ``override_settings`` work in tests and keeps import side-effect
free; the values are memoized per attribute and dropped on Django's ``setting_changed`` signal, so
the hot path pays a dict lookup, not a ``getattr(settings, ...)`` chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.db.models import Model

__all__ = ["ALL_OPS", "Profile", "normalize_ops", "profile_for", "settings"]

ALL_OPS: frozenset[str] = frozenset({"get", "fetch", "count", "aggregate", "exists"})
PROFILE_OPTIONS: frozenset[str] = frozenset(
    {"ops", "timeout", "local_get", "cache_on_save", "lock", "db_agnostic"}
)

# name (without the FRESHCACHE_ prefix) -> default
DEFAULTS: dict[str, Any] = {
    "": {},  # FRESHCACHE itself: the profiles
    "DEFAULTS": {},
    "ENABLED": True,
    "BACKEND": None,
    "REDIS": None,
    "SENTINEL": None,
    "CLUSTER": None,
    "CLIENT_CLASS": None,
    "DEGRADE_ON_FAILURE": False,
    "PREFIX": "fc:",
    "SERIALIZER": None,
    "SIGNING_KEY": None,
    "MAX_IN": 100,
    "MAX_VALUE_SIZE": 8 * 1024 * 1024,
    "LOCMEM_MAX_ENTRIES": 200_000,
    "GRANULAR_WRITE_LIMIT": 1000,
    "LOCK_TIMEOUT": 10,
    "LOCAL_GET_MAX_ENTRIES": 10_000,
}


def normalize_ops(ops: object) -> frozenset[str]:
    """Accept the seed's spellings: ``'all'``, one op as a string, any collection, or None/()."""
    if ops is None:
        return frozenset()
    if isinstance(ops, str):
        return ALL_OPS if ops == "all" else frozenset({ops})
    if isinstance(ops, Iterable):
        result: set[str] = set()
        for op in ops:
            result |= ALL_OPS if op == "all" else {op}
        return frozenset(result)
    raise TypeError(f"ops must be a string or a collection of strings, not {type(ops).__name__}")


@dataclass(frozen=True)
class Profile:
    """How one model is cached: the merged result of FRESHCACHE_DEFAULTS and its profile.

    ``Profile(ops=frozenset({'get'}), timeout=900)`` caches ``.get()`` for 15 minutes; the
    other options keep the seed's meaning.
    """

    ops: frozenset[str] = frozenset()
    timeout: int | None = None
    local_get: bool = False
    cache_on_save: bool | str = False
    lock: bool = False
    db_agnostic: bool = True


class Settings:
    """``settings.NAME`` reads ``FRESHCACHE_NAME`` (``PROFILES`` reads ``FRESHCACHE``)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._profiles: dict[str, Profile | None] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = "" if name == "PROFILES" else name
        if key not in DEFAULTS:
            raise AttributeError(f"unknown freshcache setting {name!r}")
        setting = "FRESHCACHE" + (f"_{key}" if key else "")
        value = getattr(django_settings, setting, DEFAULTS[key])
        self._cache[name] = value
        # Memoize as a real attribute so the next read skips __getattr__ entirely.
        object.__setattr__(self, name, value)
        return value

    def reset(self) -> None:
        for name in self._cache:
            self.__dict__.pop(name, None)
        self._cache.clear()
        self._profiles.clear()
        for hook in _reset_hooks:
            hook()


settings = Settings()
_reset_hooks: list[Callable[[], None]] = []


def on_reset(hook: Callable[[], None]) -> Callable[[], None]:
    """Register a function to run when any FRESHCACHE setting changes (e.g. drop a backend)."""
    _reset_hooks.append(hook)
    return hook


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("FRESHCACHE") or setting in {"SECRET_KEY", "DATABASES"}:
        settings.reset()


setting_changed.connect(_setting_changed, dispatch_uid="freshcache.conf")


def profile_candidates(label_lower: str) -> list[str]:
    """The FRESHCACHE keys that may hold a model's profile, most specific first."""
    app_label = label_lower.split(".", 1)[0]
    return [label_lower, f"{app_label}.*", "*.*"]


def build_profile(raw: dict[str, Any] | None) -> Profile | None:
    if raw is None:
        return None
    merged = {**settings.DEFAULTS, **raw}
    return Profile(
        ops=normalize_ops(merged.get("ops")),
        timeout=merged.get("timeout"),
        local_get=bool(merged.get("local_get", False)),
        cache_on_save=merged.get("cache_on_save", False),
        lock=bool(merged.get("lock", False)),
        db_agnostic=bool(merged.get("db_agnostic", True)),
    )


_NO_PROFILE = object()


def profile_for(model: type[Model]) -> Profile | None:
    """The model's profile: ``'app.model'`` beats ``'app.*'`` beats ``'*.*'``.

    ``None`` means the model is not configured (or explicitly forbidden) and must not be cached,
    not even by ``.cache()``.
    """
    label = model._meta.label_lower
    cached = settings._profiles.get(label, _NO_PROFILE)
    if cached is not _NO_PROFILE:
        return cached  # type: ignore[return-value]
    profiles = {str(k).lower(): v for k, v in (settings.PROFILES or {}).items()}
    profile: Profile | None = None
    for candidate in profile_candidates(label):
        if candidate in profiles:
            profile = build_profile(profiles[candidate])
            break
    settings._profiles[label] = profile
    return profile


@dataclass(frozen=True)
class QueryDescriptor:
    """What a ``FRESHCACHE_PREFIX`` callable receives: the database(s) and table(s) involved.

    A callable prefix must give readers and writers of the same data the same prefix, so base it
    on the database or the tenant, not on the particular set of tables.
    """

    db: str
    tables: tuple[str, ...] = ()

    @property
    def dbs(self) -> tuple[str, ...]:
        return (self.db,)

    @property
    def table(self) -> str | None:
        return self.tables[0] if self.tables else None


def prefix_varies() -> bool:
    """Whether ``FRESHCACHE_PREFIX`` is a callable (or a dotted path to one), whose answer may
    change from one call to the next (a tenant): keys remembered in a process are then
    checked against the current prefix before use."""
    prefix = settings.PREFIX
    return not isinstance(prefix, str) or ("." in prefix and ":" not in prefix)


def key_prefix(db: str, tables: tuple[str, ...] = ()) -> str:
    """The key prefix for data of ``db``/``tables``: FRESHCACHE_PREFIX as a string, a callable
    or a dotted path to one."""
    prefix = settings.PREFIX
    if isinstance(prefix, str):
        if "." not in prefix or ":" in prefix:
            return prefix
        from django.utils.module_loading import import_string

        try:
            prefix = import_string(prefix)
        except ImportError:
            return str(settings.PREFIX)
        settings.__dict__["PREFIX"] = prefix
    return str(prefix(QueryDescriptor(db=db, tables=tables)))
