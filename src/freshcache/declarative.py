"""Declarative caches: ``InstanceCache``, ``QuerysetCache`` and ``BatchCacheQuery``.

A cache class names a model and the fields that key it; ``resolve()`` returns the stored value,
or runs the fallback (``get_instance`` / ``get_result``) and stores its result with the stamps of
everything it read (:mod:`freshcache.fallback`): a write to a key field's old or new value, to
another model a custom fallback reads, a delete -- anything that could change the result -- makes
it invalid, with no invalidation code of its own.

The key is ``call_key(prefix, "d", "<class name>:v<version>", (db, *key values))``, so class
names must be unique: a duplicate is an error at startup (caches.py modules are imported then),
naming both classes. Key values are normalised: an instance and its id give the same key.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import router
from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet

from freshcache.conf import key_prefix, profile_for
from freshcache.exceptions import ImproperlyConfigured
from freshcache.fallback import MISS, Absent, Spec, default_timeout, fetch, run, served
from freshcache.keys import call_key
from freshcache.store import store

__all__ = [
    "BatchCacheQuery",
    "InstanceCache",
    "ModelCache",
    "QuerysetCache",
    "cache_classes",
    "canonical",
    "key_field_problem",
    "simple_classes",
]

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
        usable = sorted(f.name for f in opts.get_fields() if f.concrete or _is_generic_fk(f))
        return f"{name!r} is not a field of {opts.label}.", f"Fields of {opts.label}: {usable}."
    if field.name != name:  # get_field() also finds a foreign key by its column, ``user_id``
        return (
            f"{name!r} is the column of the foreign key {field.name!r} of {opts.label}, "
            "not a field name.",
            f"Write {field.name!r}; callers may still pass {name}=<id>.",
        )
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
            part = (ct.app_label, ct.model, value.pk)
            return part, {field.ct_field: ct, field.fk_field: value.pk}
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
    """A key field's name as dispatch compares it: ``pk`` becomes the primary key's name, and
    so does, on a multi-table child, the parent's key its own links to (``id`` on a child
    whose primary key is ``parent_ptr``), which Django's lookups accept alike."""
    pk = model._meta.pk
    if name == "pk" or name == pk.name:
        return str(pk.name)
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return name
    link = pk
    while link.remote_field is not None and getattr(link.remote_field, "parent_link", False):
        link = link.target_field
        if link is field:
            return str(pk.name)
    return name


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


class ModelCache(abc.ABC):
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
    _kind: ClassVar[str] = ""  # "get" or "filter": what Model.cache may use the class for
    _generated: ClassVar[bool] = False  # made by a ModelCacheManager, not written by a user

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "model", None) is None or not getattr(cls, "key_fields", None):
            return  # an abstract base: nothing to register
        if isinstance(cls.key_fields, str):
            raise ImproperlyConfigured(f"{cls.__name__}.key_fields must be a tuple, like ('user',)")
        if cls.__dict__.get("_generated"):
            return
        old = _classes.get(cls.__name__)
        if old is not None and _origin(old) != _origin(cls):
            raise ImproperlyConfigured(
                f"Two cache classes are named {cls.__name__!r}: {_origin(old)} and "
                f"{_origin(cls)}. Cache keys are made from the class name: rename one."
            )
        _classes[cls.__name__] = cls
        model_ok = isinstance(cls.model, type) and issubclass(cls.model, Model)
        if model_ok and cls.is_simple():  # a wrong model is reported by the system check
            names = frozenset(canonical(cls.model, n) for n in cls.key_fields)
            table = simple_classes.setdefault((cls.model, cls._kind), {})
            current = table.get(names)
            if current is None or _origin(current) == _origin(cls):
                table[names] = cls

    @classmethod
    def is_simple(cls) -> bool:
        """Whether the fallback is the default one (``Model.cache`` may then use the class)."""
        return False

    @classmethod
    def _plain(cls) -> bool:
        """No option that changes what is served (rows, freshness, database): ``Model.cache``
        must not turn time-based, or read other rows, because some class chose to."""
        return (
            cls.invalidation is True
            and cls.allowtime is None
            and cls.using is None
            and cls.get_queryset is ModelCache.get_queryset
        )

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
        given: dict[str, Any] = {f.name: value for f, value in zip(fields, args, strict=False)}
        by_name = {f.name: f for f in fields}
        for f in fields:
            if f.kind == "fk":
                by_name.setdefault(f.field.attname, f)
        for name, value in kwargs.items():
            target = by_name.get(canonical(cls.model, name))
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

    @classmethod
    def get_key(cls, *args: Any, **kwargs: Any) -> str:
        """flash's spelling of ``Cache(*args, **kwargs).key``, callable on the class."""
        return cls(*args, **kwargs).key

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

    @abc.abstractmethod
    def compute(self) -> Any:
        """Run the fallback: each kind (instance, queryset) defines it."""

    def finish(self, value: Any) -> Any:
        """The value a caller receives for what was stored (absence raises ``DoesNotExist``)."""
        if isinstance(value, Absent):
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

    _kind = "get"

    def get_instance(self, *values: Any) -> Any:
        return self.get_queryset().get(**self.lookups)

    @classmethod
    def is_simple(cls) -> bool:
        return cls.get_instance is InstanceCache.get_instance and cls._plain()

    def compute(self) -> Any:
        try:
            return self.get_instance(*self.args)
        except self.model.DoesNotExist:
            return Absent()


class QuerysetCache(ModelCache):
    """A query's result by ``key_fields``: by default the list of ``filter(...)``.

    Override ``get_result(self, *values)`` for anything else (a count, ``values_list``, an
    existence check...). A QuerySet it returns is evaluated before it is stored.
    """

    _kind = "filter"

    def get_result(self, *values: Any) -> Any:
        return list(self.get_queryset().filter(**self.lookups))

    @classmethod
    def is_simple(cls) -> bool:
        return cls.get_result is QuerysetCache.get_result and cls._plain()

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
        names = [name for name, _ in batched]
        found = dict(zip(names, zip(specs, fetch(specs), strict=True), strict=True))
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
                    if value is MISS:
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
