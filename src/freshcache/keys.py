"""Cache keys for functions, views and fragments, built from their arguments.

A key must be the same in every process and across deploys for the same call, and different for
calls that may return different results: so only values with a faithful, stable text form are
accepted (model instances by label and primary key, requests by path and query string, plain
values, and containers of them). Anything else raises ``TypeError``, which callers turn into
"not cached" rather than risk two calls sharing a key. Keys are hashes: no raw user input in them.
ORM reads are keyed by their statement: SQL, parameters (by a ``repr`` only plain values may
use), database and result shape.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict

__all__ = ["call_key", "func_name", "key_text", "params_text", "query_key"]


def func_name(func: Callable[..., Any]) -> str:
    """Module and qualified name: stable across processes, unlike ``id()`` or code hashes.

    A class-based view's ``as_view()`` function is named after its class: every such function
    is ``View.as_view.<locals>.view``."""
    func = getattr(func, "view_class", func)
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def key_text(value: object) -> str:
    """A type-tagged, canonical text for ``value``; ``TypeError`` if it has none we trust."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float, decimal.Decimal, uuid.UUID)):
        return f"{type(value).__name__}:{_base_repr(value)}"
    if isinstance(value, str):
        return f"s:{str.__repr__(value)}"
    if isinstance(value, bytes):
        return f"b:{value.hex()}"
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return f"{type(value).__name__}:{_base_repr(value)}"
    if isinstance(value, Model):
        if value.pk is None:
            raise TypeError(f"an unsaved {type(value).__name__} has no stable key")
        # The values too, not just the pk: a function may use the instance's attributes, and
        # an instance loaded before a write must not share a result with a fresh one.
        fields = value._meta.concrete_fields
        state = ",".join(key_text(getattr(value, f.attname, None)) for f in fields)
        return f"m:{value._meta.label_lower}:{key_text(value.pk)}:{state}"
    if isinstance(value, HttpRequest):
        return f"r:{value.get_full_path()}"
    if isinstance(value, QuerySet):
        if value._result_cache is not None:
            raise TypeError("an evaluated queryset holds rows of its own: pass it unevaluated")
        # The same SQL gives dicts, tuples or flat values (and, for a proxy, other instances).
        shape = f"{value.db}:{value.model._meta.label_lower}:{value._iterable_class.__qualname__}"
        try:
            sql, params = value.query.sql_with_params()
        except EmptyResultSet:
            return f"q:{shape}:empty"
        return f"q:{shape}:{sql}:{key_text(tuple(params))}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({','.join(key_text(v) for v in value)})"
    if isinstance(value, (set, frozenset)):
        return f"set({','.join(sorted(key_text(v) for v in value))})"
    if isinstance(value, MultiValueDict):  # ``request.GET``: every value of a key counts
        value = dict(value.lists())
    if isinstance(value, dict):
        items = sorted(f"{key_text(k)}={key_text(v)}" for k, v in value.items())
        return f"dict({','.join(items)})"
    if type(value).__repr__ is not object.__repr__ and not isinstance(value, type):
        return f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"
    raise TypeError(f"{type(value).__name__} has no stable text to build a cache key from")


def call_key(prefix: str, kind: str, name: str, parts: tuple[Any, ...]) -> str:
    """``{prefix}{kind}:{digest}`` for a callable's name and the parts of one call."""
    text = "\x00".join([name, *(key_text(p) for p in parts)])
    return f"{prefix}{kind}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


_PLAIN = (
    str, int, float, bool, type(None), decimal.Decimal, dt.datetime, dt.date, dt.time,
    dt.timedelta, uuid.UUID, bytes,
)  # fmt: skip


_PLAIN_TYPES = frozenset(_PLAIN)


def _exact(value: object) -> bool:
    if type(value) is tuple or type(value) is list:
        return all(map(_exact, value))
    return type(value) in _PLAIN_TYPES


def _base_repr(value: object) -> str | None:
    """A value of a subclass of a plain type by that type's ``repr``: the content the driver
    sends, which the subclass's own ``repr`` may hide (``TextChoices`` shows the member name)."""
    if isinstance(value, (list, tuple)):
        parts = [_base_repr(v) for v in value]
        if None in parts:
            return None
        inner = ", ".join(parts)  # type: ignore[arg-type]
        return f"[{inner}]" if isinstance(value, list) else f"({inner},)"
    for base in type(value).__mro__:
        if base in _PLAIN_TYPES:
            return str(base.__repr__(value))  # type: ignore[call-arg]
    return None


def params_text(params: Any) -> str | None:
    """A text that names statement parameters faithfully: their ``repr`` when every value is of
    a plain type itself (the common case, and the keys this has always made), else built from
    the plain base classes' ``repr``; None when a value is not plain at all."""
    params = tuple(params)
    if _exact(params):
        return repr(params)
    return _base_repr(params)


def query_key(prefix: str, sql: str, params: Any, db: str | None, result_type: str) -> str | None:
    """A key naming the exact statement; None when a parameter has no faithful text."""
    text = params_text(params)
    if text is None:
        return None
    text = f"{result_type}\x00{db or ''}\x00{sql}\x00{text}"
    return f"{prefix}q:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"
