"""Write-through of a saved row: the save's own invalidation stores the row it wrote.

In the load-modify-save pattern (``obj = Model.objects.get(pk=...)``, change, ``obj.save()``) the
invalidation after the save deletes the very entry the next ``get(pk=)`` reads, and that read then
pays a miss: a round trip, the query, a store. The guarded UPDATE (:mod:`freshcache.returning`)
can return the whole row as the database stored it, in the statement the save sends anyway, and
the invalidation's round trip can store it: the next ``get(pk=)`` hits.

Why this is never stale, though the value stored was read *before* the invalidation that
follows it: the fast ``get()`` that loaded the instance noted the tokens of the entry's stamps
(the global epoch, the table's registry epoch, the row's stamp) as they were before that read's
query, so before this save's UPDATE. The invalidation's script stores the row only if all three
still hold those tokens, in the same atomic step that deletes the row's stamps and gives the row
stamp a new token, which the stored entry carries:

* a write that committed after this one invalidates after its commit: before the script, the
  tokens differ and nothing is stored; after it, it deletes the new token and the entry with it;
* a write that committed between the load and this save is in the row this UPDATE returned
  (an UPDATE acts on the newest version), and its invalidation changed a token or comes later;
* ``invalidate_model``/``invalidate_all`` change the epochs, which the script compares too.

So the tokens prove that nothing invalidated the entry's stamps between a moment before the
UPDATE and the store, however old the instance: a stale instance only wastes the attempt.

The row stored must also be the row committed. Only an autocommit save qualifies (inside a
transaction the row is not final until the commit), and only when the driver's connection is
idle after the UPDATE (a ``BEGIN`` sent behind Django's back); the statement itself reports
whether the table has a trigger of its own (an AFTER UPDATE trigger could change the row
after RETURNING; an UPDATE rule's own actions run before the statement, so its RETURNING is
still the last word). And the backend must compare and store in one step: Redis and the
in-process engine do, Redis Cluster (whose keys live in different slots) does not.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgpack
from django.db import transaction
from django.db.models import Model

from freshcache.backends.base import Fill
from freshcache.conf import profile_for, settings
from freshcache.serializers import rows_codec
from freshcache.stamps import new_token
from freshcache.store import STAMP_MARGIN, Plan, store

__all__ = ["Loaded", "cache_on_save", "fill", "pending", "remember", "saving", "taken"]

#: The instance whose ``save()`` is running on this thread (set by ``pre_save``).
_saving: ContextVar[Any] = ContextVar("freshcache_saving", default=None)
_ATTR = "freshcache_loaded"
#: Whether a fast get's statement selects each column as itself, by statement text.
_plain: dict[str, bool] = {}


@dataclass(frozen=True)
class Loaded:
    """What the fast ``get(pk=)`` that built an instance read: its entry and the tokens its
    stamps held before the query."""

    key: str
    plan: Plan
    tokens: tuple[bytes, ...]
    timeout: int
    pk: object
    db: str

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # A pickled or deep-copied instance (a cached value holding it, say) drops its load:
        # what it noted concerns this process's read, and would only make the payload larger.
        return _dropped, ()


def _dropped() -> None:
    return None


def remember(instance: Any, loaded: Loaded, statement: str | None, connection: Any) -> None:
    """Note on ``instance`` what its load read, when the statement that fills the entry
    selects the model's columns as they are (a field with its own select format, such as a
    geometry, reads otherwise than an UPDATE returns it)."""
    if statement is None or len(loaded.plan.keys) != 3 or len(loaded.tokens) != 3:
        return
    verdict = _plain.get(statement)
    if verdict is None:
        qn = connection.ops.quote_name
        opts = type(instance)._meta
        table = qn(opts.db_table)
        columns = ", ".join(f"{table}.{qn(f.column)}" for f in opts.concrete_fields)
        verdict = _plain[statement] = statement.startswith(f"SELECT {columns} FROM ")
    if verdict:
        instance._state.__dict__[_ATTR] = loaded


def saving(sender: type, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """``pre_save``: the instance the next UPDATE on this thread may write through."""
    _saving.set(None if raw else instance)


def pending(
    model: type, connection: Any, *, keep: bool = False
) -> tuple[Loaded, list[Any], int] | None:
    """The load of the instance being saved, the fields to return and where the primary key
    is among them, if its save may write the row through. Only one UPDATE per save may:
    whatever comes after it is not this save's, so the first to ask takes the instance, unless
    asked to ``keep`` it for now (the caller then calls :func:`taken` as it sends its UPDATE)."""
    instance = _saving.get()
    if instance is None:
        return None
    if not keep:
        _saving.set(None)
    if type(instance)._meta.concrete_model is not model:
        return None
    loaded: Loaded | None = instance._state.__dict__.get(_ATTR)
    if (
        loaded is None
        or loaded.db != connection.alias
        or not loaded.plan.current(connection.alias)
        or connection.in_atomic_block
        or not connection.get_autocommit()
        or getattr(connection, "_freshcache_raw", False)
        or not store.backend.fills
    ):
        return None
    fields = list(model._meta.concrete_fields)
    return loaded, fields, fields.index(model._meta.pk)


def taken() -> None:
    """The UPDATE of the save :func:`pending` kept the instance for is being sent."""
    _saving.set(None)


def fill(loaded: Loaded, row: tuple[Any, ...], pk_index: int, connection: Any) -> Fill | None:
    """The entry to store in the invalidation's round trip: ``row`` as the database returned
    it, if it is the row the instance was loaded from and it is committed."""
    if not _committed(connection):
        return None
    value = row[pk_index]
    if type(value) is not type(loaded.pk) or value != loaded.pk:
        return None  # the primary key was changed before the save: another row
    try:
        data = rows_codec().dumps([row])
    except Exception:  # not storable: the invalidation goes on without it
        return None
    token = new_token()
    payload = msgpack.packb([[*loaded.tokens[:2], token], data], use_bin_type=True)
    if len(payload) > settings.MAX_VALUE_SIZE:
        return None
    g, registry, stamp = loaded.plan.keys
    return Fill(
        key=loaded.key,
        check=(g, registry, stamp),
        expect=loaded.tokens,
        token=token,
        payload=payload,
        ttl=loaded.timeout,
        stamp_ttl=loaded.timeout + STAMP_MARGIN,
    )


def _committed(connection: Any) -> bool:
    """Whether the driver's connection is outside any transaction, so the UPDATE committed:
    Django's autocommit flag knows nothing of a ``BEGIN`` sent on the driver's own connection."""
    raw = connection.connection
    info = getattr(raw, "info", None)
    status = getattr(info, "transaction_status", None)  # psycopg 3
    if status is not None:
        return int(status) == 0
    get_status = getattr(raw, "get_transaction_status", None)  # psycopg2
    return get_status is not None and get_status() == 0


# -- cache_on_save --------------------------------------------------------------------------------


def cache_on_save(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    """``post_save``: with ``cache_on_save`` in the model's profile, fill the cache entry of
    ``Model.objects.get(pk=...)`` (or ``get(<field>=...)``) once the write is committed, for
    any save (the write-through above needs an instance loaded by ``get(pk=)``).

    The entry is filled by running that very query through the cache right after our
    invalidation, rather than by forging rows from the instance: the cached rows are then
    exactly what the database returns, converters and all.
    """
    if not settings.ENABLED:
        return
    profile = profile_for(sender)
    if profile is None or not profile.cache_on_save:
        return
    field = "pk" if profile.cache_on_save is True else str(profile.cache_on_save)
    lookup = {field: getattr(instance, "pk" if field == "pk" else field, None)}
    if lookup[field] is None:
        return
    manager = sender._default_manager.db_manager(using)

    def fill() -> None:
        with contextlib.suppress(sender.DoesNotExist, sender.MultipleObjectsReturned):
            manager.cache(ops="get").get(**lookup)

    transaction.on_commit(fill, using=using)
