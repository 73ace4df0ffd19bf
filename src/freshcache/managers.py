"""``Model.cache`` (a ``ModelCacheManager`` per model) and ``CachedManager``.

Every model gets ``Model.cache``, keyed at least on its primary key. A ``ModelCacheManager``
subclass (in an app's ``caches.py``) and/or an inner ``class CacheMeta`` on the model declare
more key sets; their lists are merged. ``Model.cache.get(**kwargs)`` picks the cache class by the
*set* of keyword names (``pk``/``id`` and ``<fk>_id`` normalised): a user's ``InstanceCache`` with
the default fallback and those key fields if there is one (so both share one cached value), else
one generated from the declared sets. ``filter(**kwargs)`` does the same with ``QuerysetCache``.
``cached_foreignkeys`` makes the named foreign keys load their target through its
``Model.cache``.

``CachedManager`` is seed 002's manager: ``from_cache`` / ``objects_by_pks`` (also under their
original names ``_from_cache`` / ``_objects_by_pks``), now invalidated automatically, because
the values are computed and stored by :mod:`freshcache.fallback` like every declarative cache.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import models, router
from django.db.models import Model
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor
from django.db.models.signals import class_prepared
from django.http import Http404
from django.utils.module_loading import autodiscover_modules

from freshcache.conf import key_prefix, profile_for
from freshcache.declarative import (
    InstanceCache,
    ModelCache,
    QuerysetCache,
    canonical,
    simple_classes,
)
from freshcache.exceptions import FreshcacheError, ImproperlyConfigured
from freshcache.fallback import MISS, Spec, default_timeout, fetch, run, served
from freshcache.keys import call_key, key_text

__all__ = [
    "CacheNotRegistered",
    "CachedManager",
    "ModelCacheManager",
    "NotInt",
    "manager_for",
    "merged_options",
    "setup",
]

logger = logging.getLogger("freshcache")
_LISTS = ("get_key_fields_list", "filter_key_fields_list", "cached_foreignkeys")
_manager_classes: dict[type[Model], type[ModelCacheManager]] = {}
_managers: dict[type[Model], ModelCacheManager] = {}
_ready = False


class CacheNotRegistered(FreshcacheError, LookupError):
    """``Model.cache.get()``/``filter()`` with keyword names that no declared key set covers."""


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def merged_options(manager_cls: type[ModelCacheManager], model: type[Model]) -> dict[str, Any]:
    """The manager class's options merged with the model's ``CacheMeta``: lists are joined
    (``key_fields_list``, flash's later name, counts as ``get_key_fields_list``); ``timeout``
    and ``version`` may be set in either place, not to two different values."""
    meta = getattr(model, "CacheMeta", None)
    sources = [s for s in (manager_cls, meta) if s is not None]
    merged: dict[str, Any] = {}
    for name in _LISTS:
        values: list[Any] = []
        for source in sources:
            items = list(getattr(source, name, ()) or ())
            if name == "get_key_fields_list":
                items += list(getattr(source, "key_fields_list", ()) or ())
            for item in items:
                if name != "cached_foreignkeys":
                    item = (item,) if isinstance(item, str) else tuple(item)
                if item not in values:
                    values.append(item)
        merged[name] = values
    for name, unset in (("timeout", None), ("version", 0)):
        mine = getattr(manager_cls, name, unset)
        theirs = getattr(meta, name, unset)
        if mine != unset and theirs != unset and mine != theirs:
            raise ImproperlyConfigured(
                f"{_origin(manager_cls)}.{name} = {mine!r} but {model._meta.label}.CacheMeta."
                f"{name} = {theirs!r}: set it in one place."
            )
        merged[name] = mine if mine != unset else theirs
    return merged


class ModelCacheManager:
    """``Model.cache``: cached ``get``/``filter`` on declared key sets, plus your own methods.

    Subclass it with ``model``, ``get_key_fields_list`` (key sets for ``get``; the primary key is
    always one), ``filter_key_fields_list`` (for ``filter``), ``cached_foreignkeys``,
    ``timeout`` and ``version``. One manager per model; an inner ``CacheMeta`` on the model may
    hold the same attributes.
    """

    model: type[Model]
    get_key_fields_list: Sequence[Sequence[str]] = ()
    filter_key_fields_list: Sequence[Sequence[str]] = ()
    cached_foreignkeys: Sequence[str] = ()
    timeout: int | None = None
    version: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = cls.__dict__.get("model")
        if model is None:
            return
        old = _manager_classes.get(model)
        if old is not None and _origin(old) != _origin(cls):
            raise ImproperlyConfigured(
                f"{model._meta.label} has two cache managers, {_origin(old)} and {_origin(cls)}; "
                "merge them into one."
            )
        _manager_classes[model] = cls
        _managers.pop(model, None)
        if _ready:
            manager_for(model)

    def __init__(self, model: type[Model] | None = None) -> None:
        model = model or getattr(type(self), "model", None)
        if model is None:
            raise TypeError(f"{type(self).__name__} needs a model")
        self.model = model
        options = merged_options(type(self), model)
        self.get_key_fields_list = options["get_key_fields_list"]
        self.filter_key_fields_list = options["filter_key_fields_list"]
        self.cached_foreignkeys = options["cached_foreignkeys"]
        self.timeout = options["timeout"]
        self.version = options["version"]
        self.declared: dict[str, dict[frozenset[str], type[ModelCache]]] = {}
        pk = (model._meta.pk.name,)
        for kind, base, sets in (
            ("get", InstanceCache, [pk, *self.get_key_fields_list]),
            ("filter", QuerysetCache, self.filter_key_fields_list),
        ):
            table = self.declared[kind] = {}
            for names in sets:
                names_set = frozenset(canonical(model, n) for n in names)
                if names_set not in table:
                    table[names_set] = self._generate(base, kind, tuple(names), names_set)

    def _generate(
        self, base: type[ModelCache], kind: str, names: tuple[str, ...], names_set: frozenset[str]
    ) -> type[ModelCache]:
        # Not an identifier, so never the name of a user's class; stable across processes.
        name = f"{self.model._meta.label}.cache.{kind}({','.join(sorted(names_set))})"
        attrs = {
            "model": self.model,
            "key_fields": names,
            "timeout": self.timeout,
            "version": self.version,
            "_generated": True,
            "__module__": __name__,
            "__qualname__": name,
        }
        return type(name, (base,), attrs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for {self.model._meta.label}>"

    # -- dispatch ---------------------------------------------------------------------------------

    def key_sets(self, kind: str) -> list[tuple[str, ...]]:
        """Every key set ``get`` (``kind='get'``) or ``filter`` can serve."""
        found = {*simple_classes.get((self.model, kind), {}), *self.declared[kind]}
        return sorted(tuple(sorted(s)) for s in found)

    def _field_name(self, name: str) -> str:
        opts = self.model._meta
        name = canonical(self.model, name)
        if name == opts.pk.name:
            return name
        try:
            return str(opts.get_field(name).name)  # Django finds ``<fk>_id`` too
        except FieldDoesNotExist:
            return name

    def cache_class_for(self, kind: str, names: Iterable[str]) -> type[ModelCache]:
        """The cache class ``get``/``filter`` uses for these keyword names."""
        names_set = frozenset(self._field_name(n) for n in names)
        cls = simple_classes.get((self.model, kind), {}).get(names_set)
        cls = cls or self.declared[kind].get(names_set)
        if cls is None:
            method = "get" if kind == "get" else "filter"
            setting = f"{method}_key_fields_list"
            raise CacheNotRegistered(
                f"{self.model._meta.label}.cache.{method}() has no cache keyed on "
                f"{tuple(sorted(names_set))}. Declared key sets: {self.key_sets(kind)}. Add the "
                f"set to {setting} (ModelCacheManager or CacheMeta), or define a "
                f"{'InstanceCache' if kind == 'get' else 'QuerysetCache'} with these key_fields."
            )
        return cls

    def get_query(self, **kwargs: Any) -> ModelCache:
        """The lazy counterpart of :meth:`get`: ``.resolve()`` it, or put it in a batch."""
        return self.cache_class_for("get", kwargs)(**kwargs)

    def filter_query(self, **kwargs: Any) -> ModelCache:
        return self.cache_class_for("filter", kwargs)(**kwargs)

    def get_key(self, **kwargs: Any) -> str:
        """flash's name for the key ``get(**kwargs)`` reads: ``get_query(**kwargs).key``."""
        return self.get_query(**kwargs).key

    def get_cache_class_for(self, *names: str) -> type[ModelCache]:
        """flash's name for the class ``get()`` uses for these key field names."""
        return self.cache_class_for("get", names)

    def get(self, **kwargs: Any) -> Any:
        """Like ``Model.objects.get(**kwargs)``, from the cache; raises ``DoesNotExist``."""
        return self.get_query(**kwargs).resolve()

    def get_or_none(self, **kwargs: Any) -> Any:
        try:
            return self.get(**kwargs)
        except self.model.DoesNotExist:
            return None

    def get_or_404(self, **kwargs: Any) -> Any:
        try:
            return self.get(**kwargs)
        except self.model.DoesNotExist:
            raise Http404(f"No {self.model._meta.object_name} matches the given query.") from None

    def filter(self, **kwargs: Any) -> list[Any]:
        """Like ``list(Model.objects.filter(**kwargs))``, from the cache."""
        result: list[Any] = self.filter_query(**kwargs).resolve()
        return result

    # -- cached foreign keys --------------------------------------------------------------------

    def install_foreignkeys(self) -> None:
        """Make each of ``cached_foreignkeys`` load its target through ``Target.cache``."""
        for name in self.cached_foreignkeys:
            try:
                field: Any = self.model._meta.get_field(name)
            except FieldDoesNotExist:
                field = None
            if field is None or not field.concrete or not field.is_relation or field.many_to_many:
                continue  # the system check (freshcache.E018) reports it
            current = inspect.getattr_static(self.model, name, None)
            if isinstance(current, CachedRelation) or not isinstance(
                current, ForwardManyToOneDescriptor
            ):
                continue
            setattr(self.model, name, _cached_descriptor(type(current))(field))


class CachedRelation(ForwardManyToOneDescriptor):
    """A forward relation that loads its target with ``Target.cache.get(pk=...)``."""

    def get_object(self, instance: Model) -> Any:
        field = self.field
        related = field.related_model
        if (
            field.target_field.primary_key
            and not getattr(field.remote_field, "parent_link", False)
            and instance._state.db in (None, router.db_for_read(related))
        ):
            return manager_for(related).get(pk=getattr(instance, field.attname))
        return super().get_object(instance)


_descriptor_classes: dict[type, type] = {}


def _cached_descriptor(base: type) -> type:
    """``CachedRelation`` in front of Django's descriptor class (one-to-one keeps its own)."""
    if base is ForwardManyToOneDescriptor:
        return CachedRelation
    if base not in _descriptor_classes:
        _descriptor_classes[base] = type(f"Cached{base.__name__}", (CachedRelation, base), {})
    return _descriptor_classes[base]


# -- Model.cache ------------------------------------------------------------------------------


class ModelCacheAccessor:
    """``Model.cache``: the model's ``ModelCacheManager``, built on first use."""

    def __get__(self, instance: Any, owner: type[Model]) -> ModelCacheManager:
        return manager_for(owner)


def manager_for(model: type[Model]) -> ModelCacheManager:
    manager = _managers.get(model)
    if manager is None:
        manager = _manager_classes.get(model, ModelCacheManager)(model)
        manager = _managers.setdefault(model, manager)
        manager.install_foreignkeys()
    return manager


def attach(model: type[Model]) -> None:
    """Give ``model`` its ``cache`` attribute (unless it has its own) and cached FKs."""
    if model._meta.abstract:
        return
    current = inspect.getattr_static(model, "cache", None)
    if current is None:
        model.cache = ModelCacheAccessor()
    elif not isinstance(current, ModelCacheAccessor):
        logger.debug("freshcache: %s defines its own 'cache'; no Model.cache", model._meta.label)
    if model in _manager_classes or hasattr(model, "CacheMeta"):
        manager_for(model)


def _prepared(sender: type[Model], **kwargs: Any) -> None:
    attach(sender)


def setup() -> None:
    """At startup: import every app's ``caches.py`` and give every model ``Model.cache``."""
    global _ready
    autodiscover_modules("caches")
    for model in apps.get_models():
        attach(model)
    class_prepared.connect(_prepared, dispatch_uid="freshcache.managers.attach")
    _ready = True


# -- CachedManager (seed 002) -----------------------------------------------------------------


def _key_text(cache_key: str, params: Mapping[str, Any]) -> str:
    """``cache_key`` formatted with ``params``: ``{name}`` or ``%(name)s`` placeholders."""
    if not params:
        return cache_key
    values = {k: v.pk if isinstance(v, Model) else v for k, v in params.items()}
    return cache_key % values if "%(" in cache_key else cache_key.format(**values)


class NotInt(ValueError):
    """``from_cache(int_only=True, none_on_error=False)`` got a value that is not an integer.

    The cached-manager package's name for it; a ``ValueError`` too."""


class CachedManager(models.Manager):
    """``objects = CachedManager()``: ``from_cache`` and ``objects_by_pks``, invalidated
    automatically. ``timeout`` defaults to the model's profile, else FRESHCACHE_DEFAULTS."""

    def __init__(self, timeout: int | None = None) -> None:
        super().__init__()
        self.timeout = timeout

    def _scope(self) -> str | None:
        """The key text of the manager's own filter: a related manager (``user.articles``) or
        a subclass's get_queryset() filters, and two users' articles must not share a value.
        ``TypeError`` when it has no stable text (a prefetched related manager)."""
        if type(self).get_queryset is CachedManager.get_queryset:
            return None
        return key_text(self.get_queryset())

    def _spec(self, text: str, params: Mapping[str, Any], scope: str | None) -> Spec:
        model, db = self.model, self.db
        profile = profile_for(model)
        owner = f"{model._meta.label}.{self.name or 'objects'}"
        # The parameters too: a template need not name them all, and ``None`` and ``"None"``
        # format alike.
        lookups = {k: v.pk if isinstance(v, Model) else v for k, v in params.items()}
        return Spec(
            key=call_key(key_prefix(db), "m", model._meta.label_lower, (db, text, lookups, scope)),
            model=model,
            db=db,
            timeout=self.timeout or default_timeout(model, owner),
            lock=bool(profile and profile.lock),
        )

    def from_cache(
        self,
        cache_key: str,
        kwargs: Mapping[str, Any] | None = None,
        only: Sequence[str] | None = None,
        none_on_error: bool = True,
        int_only: bool = False,
        empty_value: Any = -1,
        one_item: bool = False,
        const_kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """``.get()`` (``one_item``) or the list of ``.filter()`` for ``kwargs`` plus
        ``const_kwargs``, cached under ``cache_key`` formatted with ``kwargs``.

        ``int_only`` converts ``kwargs`` values to ``int`` first; a value that is not one, or a
        missing row, returns ``None`` with ``none_on_error`` (the default) and raises
        otherwise. ``empty_value`` is accepted for compatibility: freshcache tells a miss from
        any stored value itself. Use one ``only`` / ``one_item`` per ``cache_key``.
        """
        params = dict(kwargs or {})
        if int_only:
            try:
                params = {k: int(v) for k, v in params.items()}
            except (TypeError, ValueError):
                if none_on_error:
                    return None
                raise NotInt(
                    f"from_cache({cache_key!r}, int_only=True): not integers: {params!r}"
                ) from None
        lookups = {**params, **(const_kwargs or {})}

        def compute() -> Any:
            qs = self.get_queryset()
            if only:
                qs = qs.only(*only)
            if not one_item:
                return list(qs.filter(**lookups))
            try:
                return qs.get(**lookups)
            except self.model.DoesNotExist:
                if none_on_error:
                    return None
                raise

        try:
            spec = self._spec(_key_text(cache_key, params), params, self._scope())
        except TypeError:  # a value with no stable text (keys.key_text): not cached
            return compute()
        return run(spec, compute)

    def objects_by_pks(
        self,
        get_item_func: Callable[[Any], Any],
        pks: Iterable[Any],
        cache_key: str,
        dict_key: str = "pk",
        empty_value: Any = -1,
    ) -> list[Any]:
        """The item for each of ``pks``, in order: every cached one read in one round trip,
        ``get_item_func(pk)`` called for the others only. ``get_item_func`` is typically
        ``lambda pk: manager.from_cache(cache_key, {dict_key: pk}, one_item=True)``."""
        pks = list(pks)
        try:
            scope = self._scope()
            specs = [
                self._spec(_key_text(cache_key, {dict_key: pk}), {dict_key: pk}, scope)
                for pk in pks
            ]
        except TypeError:  # a value with no stable text: nothing to read in one round trip
            return [get_item_func(pk) for pk in pks]
        results = []
        for pk, spec, found in zip(pks, specs, fetch(specs), strict=True):
            value = served(spec, found)
            results.append(get_item_func(pk) if value is MISS else value)
        return results

    _from_cache = from_cache
    _objects_by_pks = objects_by_pks
