"""System checks: every bad FRESHCACHE_* value is reported at startup with the fix.

Ids are stable (documented in docs/settings.md) so projects can silence a specific one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

from django.apps import apps
from django.core.checks import CheckMessage, Error, Warning, register

from freshcache.conf import ALL_OPS, PROFILE_OPTIONS, settings

__all__ = ["check_settings"]

REDIS_SCHEMES = {"redis", "rediss", "unix"}
ENGINES = {"redis", "cluster", "locmem"}


def _err(msg: str, hint: str, n: int) -> Error:
    return Error(msg, hint=hint, id=f"freshcache.E{n:03d}")


def _check_profile(name: str, profile: Any) -> Iterable[CheckMessage]:
    if profile is None:
        return
    if not isinstance(profile, Mapping):
        yield _err(
            f"FRESHCACHE[{name!r}] must be a dict of options or None, not "
            f"{type(profile).__name__}.",
            "Write e.g. {'ops': 'get', 'timeout': 900}, or None to forbid caching.",
            2,
        )
        return
    unknown = set(profile) - PROFILE_OPTIONS
    if unknown:
        yield _err(
            f"FRESHCACHE[{name!r}] has unknown option(s) {sorted(unknown)}.",
            f"Profile options are {sorted(PROFILE_OPTIONS)}.",
            5,
        )
    defaults = settings.DEFAULTS if isinstance(settings.DEFAULTS, Mapping) else {}
    ops = profile.get("ops", defaults.get("ops", ()))
    op_list = [ops] if isinstance(ops, str) else ops
    if ops is not None and not isinstance(op_list, Iterable):
        yield _err(
            f"FRESHCACHE[{name!r}]['ops'] must be a string or a collection of strings.",
            "Write e.g. 'all', 'get' or {'get', 'fetch'}.",
            3,
        )
    else:
        bad = sorted({str(op) for op in op_list or () if op != "all" and op not in ALL_OPS})
        if bad:
            yield _err(
                f"FRESHCACHE[{name!r}]['ops'] has unknown op(s) {bad}.",
                f"Use 'all' or any of {sorted(ALL_OPS)}.",
                3,
            )
    merged = {**defaults, **profile}
    if "timeout" not in merged:
        yield _err(
            f"FRESHCACHE[{name!r}] has no timeout.",
            "Add 'timeout': <seconds> to the profile or FRESHCACHE_DEFAULTS = {'timeout': 3600}.",
            4,
        )
    else:
        timeout = merged["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            yield _err(
                f"FRESHCACHE[{name!r}] timeout must be a positive number of seconds, "
                f"got {timeout!r}.",
                "Write e.g. 'timeout': 60 * 15.",
                9,
            )
    if name == "*.*":
        return
    app_label, _, model_name = name.lower().partition(".")
    if not model_name:
        yield _err(
            f"FRESHCACHE key {name!r} is not 'app_label.model', 'app_label.*' or '*.*'.",
            "Name the model as 'app_label.modelname' (lowercase), e.g. 'auth.user'.",
            6,
        )
        return
    try:
        app = apps.get_app_config(app_label)
    except LookupError:
        yield _err(
            f"FRESHCACHE[{name!r}] names app {app_label!r}, which is not installed.",
            "Use the app label of an app in INSTALLED_APPS.",
            6,
        )
        return
    if model_name != "*":
        try:
            app.get_model(model_name)
        except LookupError:
            models = sorted(m._meta.model_name for m in app.get_models())
            yield _err(
                f"FRESHCACHE[{name!r}] names a model that does not exist in {app_label!r}.",
                f"Models of {app_label!r}: {models}.",
                6,
            )


def _check_redis() -> Iterable[CheckMessage]:
    conf = settings.REDIS
    if conf is None:
        pass
    elif isinstance(conf, str):
        parsed = urlparse(conf)
        if parsed.scheme not in REDIS_SCHEMES:
            yield _err(
                f"FRESHCACHE_REDIS {conf!r} is not a Redis URL.",
                "Write e.g. 'redis://localhost:6379/1', 'rediss://...' or "
                "'unix:///path/to/redis.sock?db=1'.",
                7,
            )
        elif parsed.scheme != "unix":
            try:
                parsed.port  # noqa: B018 - raises on a bad port
            except ValueError:
                yield _err(f"FRESHCACHE_REDIS {conf!r} has a bad port.", "Use a number.", 7)
            db = parsed.path.lstrip("/")
            if db and not db.isdigit():
                yield _err(
                    f"FRESHCACHE_REDIS {conf!r}: the database {db!r} is not a number.",
                    "Write the database as /<number>, e.g. redis://localhost:6379/1.",
                    7,
                )
    elif not isinstance(conf, Mapping):
        yield _err(
            f"FRESHCACHE_REDIS must be a URL or a dict, not {type(conf).__name__}.",
            "Write e.g. 'redis://localhost:6379/1' or {'host': 'localhost', 'port': 6379}.",
            10,
        )
    sentinel = settings.SENTINEL
    if sentinel is not None and (
        not isinstance(sentinel, Mapping) or not {"locations", "service_name"} <= set(sentinel)
    ):
        yield _err(
            "FRESHCACHE_SENTINEL must be a dict with 'locations' and 'service_name'.",
            "Write e.g. {'locations': [('localhost', 26379)], 'service_name': 'mymaster'}.",
            11,
        )


def _check_backend() -> Iterable[CheckMessage]:
    from django.utils.module_loading import import_string

    name = settings.BACKEND
    if name is not None and not isinstance(name, str):
        yield _err(
            f"FRESHCACHE_BACKEND must be a string, not {type(name).__name__}.",
            f"Use one of {sorted(ENGINES)} or a dotted path to a Backend subclass.",
            8,
        )
    elif name is not None and name not in ENGINES:
        try:
            import_string(name)
        except ImportError:
            yield _err(
                f"FRESHCACHE_BACKEND {name!r} is neither an engine nor an importable class.",
                f"Use one of {sorted(ENGINES)} or a dotted path to a Backend subclass.",
                8,
            )
    yield from _check_cluster(name)
    client = settings.CLIENT_CLASS
    if isinstance(client, str):
        try:
            import_string(client)
        except ImportError:
            yield _err(
                f"FRESHCACHE_CLIENT_CLASS {client!r} cannot be imported.",
                "Give the dotted path of a redis.Redis subclass, e.g. 'myproject.redis.Client'.",
                12,
            )
    serializer = settings.SERIALIZER
    if serializer is not None:
        try:
            codec = import_string(serializer) if isinstance(serializer, str) else None
        except ImportError:
            codec = None
        if not (isinstance(codec, type) and callable(getattr(codec, "loads", None))):
            yield _err(
                f"FRESHCACHE_SERIALIZER {serializer!r} is not an importable class with "
                "dumps() and loads().",
                "Give a dotted path, e.g. 'freshcache.serializers.RowsCodec', or remove it.",
                16,
            )
    prefix = settings.PREFIX
    if not (isinstance(prefix, str) or callable(prefix)):
        yield _err(
            f"FRESHCACHE_PREFIX must be a string, a callable or a dotted path, not {prefix!r}.",
            "Write e.g. 'fc:' or 'myproject.cache.tenant_prefix'.",
            13,
        )


def _check_cluster(name: Any) -> Iterable[CheckMessage]:
    """E015: a FRESHCACHE_CLUSTER the cluster engine cannot use, or the engine without one."""
    from freshcache.backends import backend_name
    from freshcache.backends.cluster import cluster_class, cluster_kwargs
    from freshcache.exceptions import ImproperlyConfigured

    hint = (
        "Write e.g. FRESHCACHE_CLUSTER = 'redis://10.0.0.1:7000' or "
        "{'startup_nodes': ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7000'], 'password': '...'}."
    )
    conf = settings.CLUSTER
    if conf is None:
        if name == "cluster" and not settings.REDIS:
            yield _err(
                "FRESHCACHE_BACKEND is 'cluster' but FRESHCACHE_CLUSTER is not set.", hint, 15
            )
        return
    try:
        cluster_kwargs(conf)
    except ImproperlyConfigured as exc:
        yield _err(f"{exc}.", hint, 15)
    if backend_name() == "cluster" and settings.CLIENT_CLASS:
        try:
            cluster_class(settings.CLIENT_CLASS)
        except ImproperlyConfigured as exc:
            yield _err(f"{exc}.", "Subclass redis.cluster.RedisCluster, or remove it.", 15)
        except ImportError:
            pass  # E012 says it


def multiprocess_server() -> str | None:
    """The name of a pre-forking server this process runs under, if we can tell."""
    if "uwsgi" in sys.modules:
        return "uWSGI"
    if "gunicorn.arbiter" in sys.modules or os.environ.get("SERVER_SOFTWARE", "").startswith(
        "gunicorn"
    ):
        return "gunicorn"
    try:
        if int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
            return "a server with WEB_CONCURRENCY > 1"
    except ValueError:
        pass
    return None


def _check_locmem() -> Iterable[CheckMessage]:
    from freshcache.backends import backend_name

    if backend_name() != "locmem":
        return
    server = multiprocess_server()
    if server:
        yield Warning(
            f"freshcache uses the in-process backend under {server}: each worker process "
            "has its own cache, and a write in one process does not invalidate the others.",
            hint="Configure FRESHCACHE_REDIS = 'redis://host:6379/1' for multi-process servers.",
            id="freshcache.W001",
        )


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    profiles = settings.PROFILES
    if not isinstance(profiles, Mapping):
        messages.append(
            _err(
                f"FRESHCACHE must be a dict of profiles, not {type(profiles).__name__}.",
                "Write e.g. FRESHCACHE = {'auth.user': {'ops': 'get', 'timeout': 900}}.",
                1,
            )
        )
    else:
        for name, profile in profiles.items():
            messages.extend(_check_profile(str(name), profile))
    if not isinstance(settings.DEFAULTS, Mapping):
        messages.append(
            _err(
                "FRESHCACHE_DEFAULTS must be a dict of profile options.",
                "Write e.g. FRESHCACHE_DEFAULTS = {'timeout': 3600}.",
                14,
            )
        )
    messages.extend(_check_redis())
    messages.extend(_check_backend())
    messages.extend(_check_locmem())
    return messages


# -- declarative caches (InstanceCache, QuerysetCache, ModelCacheManager, CacheMeta) ----------


def _check_key_set(owner: str, model: Any, names: Any) -> Iterable[CheckMessage]:
    from freshcache.declarative import key_field_problem

    if isinstance(names, str) or not names:
        yield _err(
            f"{owner} must be a non-empty tuple of field names, not {names!r}.",
            "Write e.g. ('user',) or ('user', 'event').",
            17,
        )
        return
    for name in names:
        problem = key_field_problem(model, name)
        if problem:
            yield _err(f"{owner}: {problem[0]}", problem[1], 17)


@register()
def check_declarative(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Key fields that are not fields of the model (E017), cached foreign keys that are not
    foreign keys (E018), cache classes without a model or a timeout (E019)."""
    from django.db.models import Model

    from freshcache.declarative import cache_classes
    from freshcache.exceptions import ImproperlyConfigured
    from freshcache.fallback import default_timeout
    from freshcache.managers import ModelCacheManager, _manager_classes, merged_options

    messages: list[CheckMessage] = []
    for cls in cache_classes():
        model = cls.model
        if not (isinstance(model, type) and issubclass(model, Model)):
            messages.append(
                _err(
                    f"{cls.__name__}.model is {model!r}, not a Django model.",
                    "Set model = <the model class whose fields are in key_fields>.",
                    19,
                )
            )
            continue
        messages.extend(_check_key_set(f"{cls.__name__}.key_fields", model, cls.key_fields))
        try:
            if not cls.timeout:
                default_timeout(model, cls.__name__)
        except ImproperlyConfigured as exc:
            messages.append(_err(str(exc), "Give it a timeout.", 19))
    for model in apps.get_models():
        manager = _manager_classes.get(model)
        if manager is None and not hasattr(model, "CacheMeta"):
            continue
        label = model._meta.label
        try:
            options = merged_options(manager or ModelCacheManager, model)
        except ImproperlyConfigured as exc:
            messages.append(_err(str(exc), "Keep one value.", 19))
            continue
        for attr in ("get_key_fields_list", "filter_key_fields_list"):
            for names in options[attr]:
                messages.extend(_check_key_set(f"{label} cache {attr}", model, names))
        for name in options["cached_foreignkeys"]:
            field = next((f for f in model._meta.concrete_fields if f.name == name), None)
            if field is None or not field.is_relation:
                fks = sorted(f.name for f in model._meta.concrete_fields if f.is_relation)
                messages.append(
                    _err(
                        f"{label} cached_foreignkeys names {name!r}, which is not a foreign key "
                        "or one-to-one field of it.",
                        f"Its foreign keys: {fks}.",
                        18,
                    )
                )
    return messages
