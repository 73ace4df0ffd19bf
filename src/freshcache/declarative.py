"""Declarative caches: ``InstanceCache``, ``QuerysetCache`` and ``BatchCacheQuery``.

A cache class names a model and the fields that key it; ``resolve()`` returns the stored value,
or runs the fallback (``get_instance`` / ``get_result``) and stores its result. The fallback runs
inside a capture (:mod:`freshcache.capture`), exactly like ``@cached_as()`` with no samples, so
the value carries the stamps of everything it read: a write to a key field's old or new value, to
another model a custom fallback reads, a delete -- anything that could change the result -- makes
it invalid. Nothing here invalidates by hand.

Every value also depends on two more keys: the global epoch (``invalidate_all``) and the model's
*version* key, which :func:`bump_version` deletes after a deploy that changes the model's fields.
The cached key is ``call_key(prefix, "d", "<class name>:v<version>", (db, *key values))``, so
class names must be unique (a duplicate is an error at startup, naming both classes).

Values are read with their stamps in one round trip when this process has read or stored them
before (it remembers which stamp keys each value carries), two otherwise; a
:class:`BatchCacheQuery` reads any number of values in the same round trip.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, router
from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet

from freshcache import capture
from freshcache import transaction as tx
from freshcache.conf import key_prefix, on_reset, profile_for, settings
from freshcache.exceptions import ImproperlyConfigured, SerializationError
from freshcache.keys import call_key
from freshcache.serializers import dumps_signed, loads_signed
from freshcache.signals import cache_read
from freshcache.store import Plan, store

__all__ = [
    "BatchCacheQuery",
    "InstanceCache",
    "QuerysetCache",
    "Spec",
    "bump_version",
    "cache_classes",
    "key_field_problem",
]

logger = logging.getLogger("freshcache")
_now = time.time  # the clock of ``allowtime``; a module attribute so tests can move it
_MISS: Any = object()
_UNSET: Any = object()
Found = tuple[bytes, list[str], list[bytes], frozenset[str]]


class _Absent:
    """Stored when the fallback raised the model's ``DoesNotExist``: absence is cached too."""

    __slots__ = ()


# -- versions ---------------------------------------------------------------------------------


def version_key(prefix: str, model: type[Model]) -> str:
    """The key every declarative value of ``model`` depends on; deleting it is a bump."""
    return f"{prefix}mv:{model._meta.concrete_model._meta.label_lower}"


def bump_version(model: type[Model], using: str | None = None) -> None:
    """Invalidate every declarative value of ``model`` (``InstanceCache``, ``QuerysetCache``,
    ``Model.cache``, ``CachedManager``), for all databases unless ``using`` names one.

    Run it after a deploy that adds, removes or changes the model's fields, so that no instance
    pickled with the old fields is served. ``manage.py bump_version app.Model`` does the same.
    """
    aliases = [using] if using else list(connections)
    store.delete(sorted({version_key(key_prefix(alias), model) for alias in aliases}))


# -- the engine: one value, its key and the rules it is cached by ---------------------------


@dataclass(frozen=True)
class Spec:
    """How one value is cached: its key and the options of the class (or manager) it is for."""

    key: str
    model: type[Model]
    db: str
    timeout: int
    lock: bool = False
    allowtime: float | None = None
    invalidation: bool = True
    owner: Any = None  # what ``cache_read`` reports as ``func``

    @property
    def hard_keys(self) -> tuple[str, str]:
        """The global epoch and the model's version: a stale value is never served past them."""
        prefix = key_prefix(self.db)
        return f"{prefix}g", version_key(prefix, self.model)


class _Hints:
    """Which stamp keys each value carried when this process last saw it (bounded LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._data: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys: Sequence[str]) -> list[str]:
        with self._lock:
            return [k for key in keys for k in self._data.get(key, ())]

    def put(self, key: str, stamps: Sequence[str]) -> None:
        with self._lock:
            self._data[key] = tuple(stamps)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


hints = _Hints()
on_reset(hints.clear)


def default_timeout(model: type[Model], owner: str) -> int:
    """The model's profile timeout, else ``FRESHCACHE_DEFAULTS['timeout']``."""
    profile = profile_for(model)
    if profile is not None and profile.timeout:
        return int(profile.timeout)
    defaults = settings.DEFAULTS if isinstance(settings.DEFAULTS, Mapping) else {}
    if defaults.get("timeout"):
        return int(defaults["timeout"])
    raise ImproperlyConfigured(
        f"{owner}: no timeout. Set timeout = <seconds> on it, give {model._meta.label} a "
        "profile with a timeout, or set FRESHCACHE_DEFAULTS = {'timeout': 3600}."
    )


def _bypassed(spec: Spec) -> bool:
    """Caching off, or uncommitted writes on the connection the value is read from."""
    return not settings.ENABLED or tx.is_dirty(connections[spec.db])


def fetch(specs: Sequence[Spec]) -> list[Found | None]:
    """What the backend holds for each spec, valid or stale: one round trip when warm."""
    found: list[Found | None] = [None] * len(specs)
    wanted = [i for i, spec in enumerate(specs) if not _bypassed(spec)]
    if wanted:
        keys = [specs[i].key for i in wanted]
        for i, item in zip(wanted, store.lookup_dynamic_many(keys, hints.get(keys)), strict=True):
            found[i] = item
    return found


def _decode(found: Found) -> tuple[float, Any] | Any:
    try:
        computed_at, value = loads_signed(found[0])
    except Exception as exc:  # a payload we cannot verify or read is a miss
        logger.warning("freshcache: declarative payload rejected (%s), recomputing", exc)
        return _MISS
    return computed_at, value


def _serve(spec: Spec, found: Found, value: Any) -> Any:
    hints.put(spec.key, found[1])
    if capture.active():  # an enclosing computation depends on what this value read
        capture.record(found[1], found[2])
    cache_read.send(sender=spec.model, func=spec.owner, hit=True)
    return value


def served(spec: Spec, found: Found | None) -> Any:
    """The value of a valid hit, or ``_MISS``."""
    if found is None or found[3]:
        return _MISS
    decoded = _decode(found)
    return _MISS if decoded is _MISS else _serve(spec, found, decoded[1])


def run(spec: Spec, compute: Callable[[], Any], found: Found | None = _UNSET) -> Any:
    """The cached value of ``spec``, else ``compute()`` stored with the stamps of what it read.

    ``found`` is what :func:`fetch` already read for it (a batch), if anything.
    """
    if _bypassed(spec):
        return compute()
    if found is _UNSET:
        (found,) = fetch([spec])
    value = served(spec, found)
    if value is not _MISS:
        return value
    if found is not None and spec.allowtime and not found[3] & set(spec.hard_keys):
        decoded = _decode(found)
        if decoded is not _MISS and _now() - decoded[0] < spec.allowtime:
            token = store.try_lock(spec.key, settings.LOCK_TIMEOUT)
            if token is None:  # another caller is recomputing it: serve the young stale value
                return _serve(spec, found, decoded[1])
            try:
                return _compute_and_store(spec, compute)
            finally:
                store.unlock(spec.key, token)
    token = None
    if spec.lock:
        token = store.lock_or_wait(spec.key, settings.LOCK_TIMEOUT)
        if token is None:  # whoever held the lock has stored it meanwhile, or gave up
            value = served(spec, fetch([spec])[0])
            if value is not _MISS:
                return value
    try:
        return _compute_and_store(spec, compute)
    finally:
        if token is not None:
            store.unlock(spec.key, token)


def _compute_and_store(spec: Spec, compute: Callable[[], Any]) -> Any:
    hard = Plan(keys=spec.hard_keys, registries=(), schemes=(), tables=())
    if spec.invalidation:
        with capture.capturing() as recorded:
            tokens = store.read_stamps(hard, spec.timeout)  # before the database, as always
            if tokens is None:
                capture.poison("the backend could not be read")
            else:
                capture.record(hard.keys, tokens)
            value = compute()
        cache_read.send(sender=spec.model, func=spec.owner, hit=False)
        if recorded.poisoned:
            logger.debug("freshcache: %s not cached: %s", spec.owner, recorded.poisoned)
            return value
        keys = list(recorded.tokens)
        tokens = [recorded.tokens[k] for k in keys]
    else:  # time-only expiry: only invalidate_all and bump_version reach it
        tokens = store.read_stamps(hard, spec.timeout)
        value = compute()
        cache_read.send(sender=spec.model, func=spec.owner, hit=False)
        if tokens is None or not tx.can_store(connections[spec.db]):
            return value
        keys = list(hard.keys)
    try:
        data = dumps_signed((_now(), _detached(value)))
    except SerializationError as exc:
        logger.debug("freshcache: %s not cached: %s", spec.owner, exc)
        return value
    if store.save_dynamic(spec.key, keys, tokens, data, spec.timeout):
        hints.put(spec.key, keys)
    return value


def _detached(value: Any) -> Any:
    """Instances without the related objects and prefetches attached to them: those may come
    from outside the computation (``user.avatar_set.get()`` attaches the caller's ``user``), so
    their changes would not reach the stored value. They load again when accessed."""
    if isinstance(value, Model):
        clone = copy.copy(value)  # Model.__getstate__ copies _state and its fields cache
        clone._state.fields_cache = {}
        clone.__dict__.pop("_prefetched_objects_cache", None)
        return clone
    if isinstance(value, list):
        return [_detached(v) if isinstance(v, Model) else v for v in value]
    return value


# -- key fields -------------------------------------------------------------------------------


def _is_generic_fk(field: Any) -> bool:
    return hasattr(field, "ct_field") and hasattr(field, "fk_field") and not field.concrete


def key_field_problem(model: type[Model], name: str) -> tuple[str, str] | None:
    """Why ``name`` cannot key ``model``'s caches, as (message, what to write), or None."""
    opts = model._meta
    if name == "pk":
        return None
    try:
        field: Any = opts.get_field(name)
    except FieldDoesNotExist:
        for candidate in opts.concrete_fields:
            if candidate.attname == name:
                return (
                    f"{name!r} is the column of the foreign key {candidate.name!r} of "
                    f"{opts.label}, not a field name.",
                    f"Write {candidate.name!r}; callers may still pass {name}=<id>.",
                )
        usable = sorted(f.name for f in opts.get_fields() if f.concrete or _is_generic_fk(f))
        return f"{name!r} is not a field of {opts.label}.", f"Fields of {opts.label}: {usable}."
    if _is_generic_fk(field) or (field.concrete and not field.many_to_many):
        return None
    return (
        f"{name!r} of {opts.label} is a reverse or many-to-many relation.",
        "Key on the model's own fields: columns, foreign keys or a GenericForeignKey.",
    )


@dataclass(frozen=True)
class KeyField:
    name: str
    field: Any
    kind: str  # "plain", "fk" or "gfk"

    def normalise(self, value: Any, db: str) -> tuple[Any, dict[str, Any]]:
        """(the value's part of the key, the ORM lookups it stands for)."""
        field = self.field
        if self.kind == "gfk":
            if not isinstance(value, Model) or value.pk is None:
                raise ValueError(f"{self.name!r} takes a saved model instance, not {value!r}")
            from django.contrib.contenttypes.models import ContentType

            ct = ContentType.objects.db_manager(db).get_for_model(
                value, for_concrete_model=field.for_concrete_model
            )
            return (ct.app_label, ct.model, value.pk), {field.ct_field: ct, field.fk_field: value.pk}
        target = field.target_field if self.kind == "fk" else field
        if isinstance(value, Model):
            related = field.related_model if self.kind == "fk" else None
            if related is None or not isinstance(value, related):
                expected = related._meta.object_name if related is not None else "a plain value"
                raise ValueError(f'Cannot query "{value}": {self.name!r} takes {expected}.')
            value = getattr(value, target.attname)
            if value is None:
                raise ValueError(f"{self.name!r}: an unsaved instance has no key")
        if value is not None:
            try:
                value = target.to_python(value)
            except ValidationError as exc:
                raise ValueError(f"{self.name!r}: {'; '.join(exc.messages)}") from None
        return value, {self.name: value}


def resolve_key_fields(model: type[Model], names: Sequence[str], owner: str) -> list[KeyField]:
    fields = []
    for name in names:
        problem = key_field_problem(model, name)
        if problem:
            raise ImproperlyConfigured(f"{owner}: {problem[0]} {problem[1]}")
        field: Any = model._meta.pk if name == "pk" else model._meta.get_field(name)
        kind = "gfk" if _is_generic_fk(field) else "fk" if field.is_relation else "plain"
        fields.append(KeyField(field.name if kind != "gfk" else name, field, kind))
    return fields


def canonical(model: type[Model], name: str) -> str:
    """A key field's name as dispatch compares it (``pk`` becomes the primary key's name)."""
    return model._meta.pk.name if name == "pk" else name


# -- cache classes ----------------------------------------------------------------------------

_classes: dict[str, type[ModelCache]] = {}
#: (model, kind) -> key field set -> the class with the default fallback (``Model.cache``)
simple_classes: dict[tuple[type[Model], str], dict[frozenset[str], type[ModelCache]]] = {}
_fields: dict[type[ModelCache], list[KeyField]] = {}


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def cache_classes() -> list[type[ModelCache]]:
    """Every registered cache class (for the system checks)."""
    return list(_classes.values())


class ModelCache:
    """What ``InstanceCache`` and ``QuerysetCache`` share: a class keyed on model fields.

    Set ``model`` and ``key_fields``; optionally ``timeout`` (seconds; default: the model's
    profile, else ``FRESHCACHE_DEFAULTS``), ``version`` (bump it when the fallback changes),
    ``lock`` (dog-pile lock; default: the profile's), ``invalidation = False`` (time-only
    expiry), ``allowtime = N`` (serve a value up to N seconds old while one caller recomputes
    it) and ``using`` (a database alias; default: the router's choice).
    """

    model: ClassVar[type[Model]]
    key_fields: ClassVar[Sequence[str]]
    timeout: ClassVar[int | None] = None
    version: ClassVar[int] = 0
    lock: ClassVar[bool | None] = None
    invalidation: ClassVar[bool] = True
    allowtime: ClassVar[float | None] = None
    using: ClassVar[str | None] = None
    kind: ClassVar[str] = ""
    fallback: ClassVar[str] = ""
    generated: ClassVar[bool] = False  # made by a ModelCacheManager, not written by a user

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "model", None) is None or not getattr(cls, "key_fields", None):
            return  # an abstract base: nothing to register
        if isinstance(cls.key_fields, str):
            raise ImproperlyConfigured(f"{cls.__name__}.key_fields must be a tuple, like ('user',)")
        if cls.__dict__.get("generated"):
            return
        old = _classes.get(cls.__name__)
        if old is not None and _origin(old) != _origin(cls):
            raise ImproperlyConfigured(
                f"Two cache classes are named {cls.__name__!r}: {_origin(old)} and "
                f"{_origin(cls)}. Cache keys are made from the class name: rename one."
            )
        _classes[cls.__name__] = cls
        if getattr(cls, cls.fallback) is getattr(cls.__mro__[-2], cls.fallback, None):
            pass  # pragma: no cover - ModelCache itself has no fallback
        if cls.is_simple():
            names = frozenset(canonical(cls.model, n) for n in cls.key_fields)
            table = simple_classes.setdefault((cls.model, cls.kind), {})
            current = table.get(names)
            if current is None or _origin(current) == _origin(cls):
                table[names] = cls

    @classmethod
    def is_simple(cls) -> bool:
        """Whether the fallback is the default one (``Model.cache`` may then use the class)."""
        return False

    @classmethod
    def key_spec(cls) -> list[KeyField]:
        fields = _fields.get(cls)
        if fields is None:
            fields = _fields[cls] = resolve_key_fields(cls.model, cls.key_fields, cls.__name__)
        return fields

    @classmethod
    def get(cls, *args: Any, **kwargs: Any) -> Any:
        """``Cls.get(...)`` is ``Cls(...).resolve()``."""
        return cls(*args, **kwargs).resolve()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if getattr(cls, "model", None) is None or not getattr(cls, "key_fields", None):
            raise TypeError(f"{cls.__name__} needs model and key_fields to be used")
        fields = cls.key_spec()
        expected = f"({', '.join(f.name for f in fields)})"
        if len(args) > len(fields):
            raise TypeError(
                f"{cls.__name__}() takes its key fields {expected}, "
                f"but {len(args)} positional arguments were given"
            )
        given: dict[str, Any] = {f.name: value for f, value in zip(fields, args)}
        by_name = {f.name: f for f in fields}
        for f in fields:
            if f.kind == "fk":
                by_name.setdefault(f.field.attname, f)
        for name, value in kwargs.items():
            target = by_name.get("pk" if name == "pk" and "pk" not in by_name else name)
            if target is None and name == "pk":
                target = by_name.get(cls.model._meta.pk.name)
            if target is None:
                raise TypeError(
                    f"{cls.__name__}() got an unexpected argument {name!r}; "
                    f"its key fields are {expected}"
                )
            if target.name in given:
                raise TypeError(f"{cls.__name__}() got two values for {target.name!r}")
            given[target.name] = value
        missing = [f.name for f in fields if f.name not in given]
        if missing:
            raise TypeError(
                f"{cls.__name__}() is missing key field(s) {missing}; its key fields are {expected}"
            )
        self.db: str = cls.using or router.db_for_read(cls.model)
        parts: list[Any] = [self.db]
        self.lookups: dict[str, Any] = {}
        for f in fields:
            part, lookups = f.normalise(given[f.name], self.db)
            parts.append(part)
            self.lookups.update(lookups)
        #: The arguments the fallback receives, in ``key_fields`` order, as the caller gave them.
        self.args: tuple[Any, ...] = tuple(given[f.name] for f in fields)
        self._parts = tuple(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.args))})"

    @property
    def key(self) -> str:
        name = f"{type(self).__name__}:v{type(self).version}"
        return call_key(key_prefix(self.db), "d", name, self._parts)

    def spec(self) -> Spec:
        cls = type(self)
        lock = cls.lock
        if lock is None:
            profile = profile_for(cls.model)
            lock = bool(profile and profile.lock)
        return Spec(
            key=self.key,
            model=cls.model,
            db=self.db,
            timeout=cls.timeout or default_timeout(cls.model, cls.__name__),
            lock=lock,
            allowtime=cls.allowtime,
            invalidation=cls.invalidation,
            owner=cls,
        )

    def get_queryset(self) -> QuerySet[Any]:
        """The model's default manager on the database this cache reads."""
        return self.model._default_manager.using(self.db)

    def compute(self) -> Any:  # pragma: no cover - each kind defines it
        raise NotImplementedError

    def finish(self, value: Any) -> Any:
        """The value a caller receives for what was stored (absence raises ``DoesNotExist``)."""
        if isinstance(value, _Absent):
            raise self.model.DoesNotExist(
                f"{self.model._meta.object_name} matching query does not exist."
            )
        return value

    def resolve(self) -> Any:
        """The cached value, else the fallback's (stored with the stamps of what it read)."""
        return self.finish(run(self.spec(), self.compute))

    def invalidate(self) -> None:
        """Drop this value (writes invalidate it anyway; this is for manual fixes)."""
        store.delete([self.key])


class InstanceCache(ModelCache):
    """One instance of ``model``, by ``key_fields``: ``UserCacheOnUsername(name).resolve()``.

    The default fallback is ``model.objects.get(...)``: a missing row raises
    ``model.DoesNotExist`` (and that absence is cached until such a row appears). Override
    ``get_instance(self, *values)`` to compute it otherwise; it may return ``None``.
    """

    kind = "get"
    fallback = "get_instance"

    def get_instance(self, *values: Any) -> Any:
        return self.get_queryset().get(**self.lookups)

    @classmethod
    def is_simple(cls) -> bool:
        return cls.get_instance is InstanceCache.get_instance

    def compute(self) -> Any:
        try:
            return self.get_instance(*self.args)
        except self.model.DoesNotExist:
            return _Absent()


class QuerysetCache(ModelCache):
    """A query's result by ``key_fields``: by default the list of ``filter(...)``.

    Override ``get_result(self, *values)`` for anything else (a count, ``values_list``, an
    existence check...). A QuerySet it returns is evaluated before it is stored.
    """

    kind = "filter"
    fallback = "get_result"

    def get_result(self, *values: Any) -> Any:
        return list(self.get_queryset().filter(**self.lookups))

    @classmethod
    def is_simple(cls) -> bool:
        return cls.get_result is QuerysetCache.get_result

    def compute(self) -> Any:
        result = self.get_result(*self.args)
        if isinstance(result, (QuerySet, RawQuerySet, Iterator)):
            result = list(result)  # never store a lazy object
        return result


# -- batches ----------------------------------------------------------------------------------


class BatchCacheQuery:
    """Several cache queries at once: every stored value is read in one backend round trip.

    ``BatchCacheQuery({'user': User.cache.get_query(id=1), 'event': EventCacheOnSlug(s)})``
    then ``.push({...})`` more, then ``.get()`` a dict of results under the same names. Misses
    are computed (not with ``only_cache=True``: they are left out of the result). An exception
    (``DoesNotExist``...) propagates, becomes ``None`` (``none_on_exception``) or is returned as
    the value (``return_exceptions``).
    """

    def __init__(self, queries: Mapping[Any, Any] | None = None, **named: Any) -> None:
        self.queries: dict[Any, Any] = {**(queries or {}), **named}

    def push(self, queries: Mapping[Any, Any] | None = None, **named: Any) -> BatchCacheQuery:
        self.queries.update({**(queries or {}), **named})
        return self

    def get(
        self,
        only_cache: bool = False,
        none_on_exception: bool = False,
        return_exceptions: bool = False,
    ) -> dict[Any, Any]:
        items = list(self.queries.items())
        batched = [(name, q) for name, q in items if isinstance(q, ModelCache)]
        specs = [q.spec() for _, q in batched]
        found = dict(zip((name for name, _ in batched), zip(specs, fetch(specs), strict=True)))
        result: dict[Any, Any] = {}
        for name, query in items:
            try:
                if name not in found:
                    if only_cache:
                        continue
                    result[name] = query.resolve()  # not a declarative cache: resolve alone
                    continue
                spec, item = found[name]
                if only_cache:
                    value = served(spec, item)
                    if value is _MISS:
                        continue
                else:
                    value = run(spec, query.compute, item)
                result[name] = query.finish(value)
            except Exception as exc:
                if return_exceptions:
                    result[name] = exc
                elif none_on_exception:
                    result[name] = None
                else:
                    raise
        return result
