"""Stamp values and stamp keys: how a column value, a conjunction and a written row become keys.

Readers (a lookup's prepared rhs) and writers (an instance's or a row's attribute values) must
reach the very same key for the same value, so both sides go through :func:`column_value`:
``field.get_prep_value`` and then :func:`normalize`, which makes values canonical and
type-aware (``True`` is not ``1``; ``Decimal("1.50")`` is ``Decimal("1.5")``; aware datetimes
are UTC). Only columns whose equality Python can decide exactly as the database does get a
kind (:func:`field_info`); the others never make a conjunction.

Keys: ``{prefix}s:{table}`` for the whole table, else ``{prefix}s:{table}:{cols}:{digest}``
where the digest (BLAKE2b, 12 bytes) covers a type-tagged encoding of the values, so that no raw
value ever appears in a key.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import os
import uuid
import zoneinfo
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import FieldError

from freshcache.memo import Memo

__all__ = [
    "SCHEME_SEP",
    "UNKNOWN",
    "Conj",
    "column_value",
    "field_info",
    "new_token",
    "normalize",
    "parse_registry",
    "row_conj_values",
    "row_stamp_keys",
    "rows_stamp_keys",
    "scheme",
    "scheme_text",
    "stamp_key",
]

Conj = tuple[tuple[str, Hashable], ...]


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()

_KINDS = {
    **dict.fromkeys(
        ["AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
         "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
         "PositiveSmallIntegerField"], int),
    **dict.fromkeys(["BooleanField", "NullBooleanField"], bool),
    **dict.fromkeys(["CharField", "TextField", "SlugField"], str),
    "FloatField": float, "DecimalField": decimal.Decimal, "DateTimeField": dt.datetime,
    "DateField": dt.date, "TimeField": dt.time, "UUIDField": uuid.UUID,
}  # fmt: skip
#: Methods a subclass of a Django field may not override and keep its exact comparisons: they
#: change the SQL type or the value written (``pre_save`` is what an INSERT really sends).
_PINNED = (
    "db_type", "rel_db_type", "db_parameters", "get_db_prep_value", "get_db_prep_save", "pre_save",
)  # fmt: skip

_DECIMALS = decimal.Context(prec=60)

_TAGS = {int: "i", float: "f", str: "s", decimal.Decimal: "d", dt.datetime: "D", dt.date: "a",
         dt.time: "t", uuid.UUID: "u"}  # fmt: skip
_CANONICAL = frozenset({type(None), bool, int, float, str, uuid.UUID, dt.date})

_field_info: dict[int, tuple[Any, type | None, int | None]] = {}
_local_fields: dict[Any, dict[str, Any]] = {}


def normalize(value: object) -> Hashable:
    """Return the canonical form of a prepared db value, or ``UNKNOWN``.

    >>> normalize(decimal.Decimal("1.50")) == normalize(decimal.Decimal("1.5"))
    True
    """
    t = type(value)
    if value is None or t is str or t is int or t is bool or t is uuid.UUID or t is dt.date:
        return value
    if t is float:
        return UNKNOWN if value != value else value + 0.0  # type: ignore[operator]
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            value = value.replace(tzinfo=None) if value.tzinfo else value
            return UNKNOWN if _shifts(value) else value
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return UNKNOWN
        if value.is_zero():
            return decimal.Decimal(0)
        value = value.normalize(_DECIMALS)
        return UNKNOWN if len(value.as_tuple().digits) > 15 else value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, dt.time):
        return value if value.utcoffset() is None else UNKNOWN
    if isinstance(value, dt.date):
        return dt.date(value.year, value.month, value.day)
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int)
    return UNKNOWN


def _shifts(value: dt.datetime) -> bool:
    """Whether a naive datetime lies in a daylight-saving gap or fold of a zone the database
    may read it in. With ``USE_TZ = False`` PostgreSQL still stores instants, reading naive
    values in the connection's zone: a time in a gap is the same instant as another time, and
    one in a fold may be either of two, so no stamp named after it is exact."""
    if django_settings.USE_TZ:
        return False  # Django sends aware values, compared as UTC instants
    names = {django_settings.TIME_ZONE}
    names.update(db.get("TIME_ZONE") for db in django_settings.DATABASES.values())
    for name in names:
        if name:
            zone = zoneinfo.ZoneInfo(name)
            early, late = value.replace(tzinfo=zone), value.replace(tzinfo=zone, fold=1)
            if early.utcoffset() != late.utcoffset():
                return True
    return False


def field_info(field: Any) -> tuple[Any, type | None, int | None]:
    """(field, python type of exactly-comparable values or None, decimal places), cached."""
    hit = _field_info.get(id(field))
    if hit is not None and hit[0] is field:
        return hit
    kind: type | None = None
    places = None
    target = field
    try:
        while target.is_relation:
            target = target.target_field  # FK, O2O; multi-column relations raise FieldError
        kind = _KINDS.get(target.get_internal_type())
        for f in (field, target):
            base = next(c for c in type(f).__mro__ if c.__module__.startswith("django.db.models."))
            if getattr(f, "db_collation", None) or any(
                getattr(type(f), m, None) is not getattr(base, m, None) for m in _PINNED
            ):
                kind = None
        places = getattr(target, "decimal_places", None)
    except (AttributeError, FieldError, StopIteration):
        kind = None
    hit = _field_info[id(field)] = (field, kind, places)
    return hit


def column_value(field: Any, raw: object) -> Hashable:
    """The stamp-key value of ``raw`` stored in ``field``'s column (read and write sides)."""
    _, kind, places = field_info(field)
    try:
        value = normalize(field.get_prep_value(raw))
    except Exception:
        return UNKNOWN
    if value is None or value is UNKNOWN:
        return value
    if kind is not None and type(value) is not kind:
        return UNKNOWN
    if kind is decimal.Decimal and places is not None:
        exponent = value.as_tuple().exponent  # type: ignore[attr-defined]
        if isinstance(exponent, int) and exponent < -places:
            return UNKNOWN
    return value


def row_conj_values(model: Any, values: Mapping[str, object]) -> dict[str, Hashable]:
    """Column -> stamp value for ``values`` (attname -> python value) of ``model``'s own table.

    Values go through ``field.get_prep_value`` then :func:`normalize`, exactly as lookups do.
    Keys that are not concrete fields of this table, and UNKNOWN values, are left out; for a
    multi-table child call it once per parent model with that table's fields.
    """
    opts = model._meta.concrete_model._meta
    fields = _local_fields.get(opts)
    if fields is None:
        fields = {f.attname: f for f in opts.local_concrete_fields}
        fields.update((f.name, f) for f in opts.local_concrete_fields if not f.is_relation)
        _local_fields[opts] = fields
    out: dict[str, Hashable] = {}
    for name, raw in values.items():
        field = fields.get(name)
        if field is not None:
            value = column_value(field, raw)
            if value is not UNKNOWN:
                out[field.column] = value
    return out


def _encode(value: Hashable) -> str:
    v: Any = value if type(value) in _CANONICAL else normalize(value)
    if v is None or v is True or v is False:
        return str(v)[0]  # N, T, F
    tag = _TAGS.get(type(v))
    if tag is None:
        raise ValueError(f"cannot build a stamp key from {value!r}")
    if tag in "Dat":
        return tag + v.isoformat()
    return tag + (v.hex if tag == "u" else repr(v) if tag == "f" else str(v))


def new_token() -> bytes:
    """A stamp's (or a lock's) value: random, so that a re-created key never matches an old one."""
    return os.urandom(9).hex().encode()


def stamp_key(prefix: str, table: str, conj: Conj) -> str:
    """``{prefix}s:{table}`` for ``()``, else ``{prefix}s:{table}:{cols}:{digest of values}``."""
    if not conj:
        return f"{prefix}s:{table}"
    h = hashlib.blake2b(digest_size=12)
    for _, value in conj:
        part = _encode(value).encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(part))
        h.update(part)
    return f"{prefix}s:{table}:{','.join(c for c, _ in conj)}:{h.hexdigest()}"


def scheme(conj: Conj) -> tuple[str, ...]:
    return tuple(column for column, _ in conj)


def row_stamp_keys(
    prefix: str, table: str, schemes: Iterable[tuple[str, ...]], row: Mapping[str, Hashable]
) -> list[str]:
    """The table-wide key, then the key of each scheme whose columns ``row`` all has."""
    keys = [stamp_key(prefix, table, ())]
    for columns in schemes:
        if columns and all(c in row and row[c] is not UNKNOWN for c in columns):
            key = stamp_key(prefix, table, tuple((c, row[c]) for c in sorted(columns)))
            if key not in keys:
                keys.append(key)
    return keys


def rows_stamp_keys(
    prefix: str,
    table: str,
    rows: Sequence[Mapping[str, Hashable]],
    schemes: Iterable[str],
    columns: Iterable[str],
) -> tuple[list[str], bool]:
    """Stamp keys of written ``rows`` for ``schemes``; False if some row lacks a scheme's
    columns (the caller then drops the whole table)."""
    cols = [tuple(s.split(",")) for s in schemes]
    complete = True
    keys: list[str] = []
    for row in rows:
        usable = [c for c in cols if all(col in row for col in c)]
        complete = complete and len(usable) == len(cols)
        keys.extend(row_stamp_keys(prefix, table, usable, row))
    if not rows and cols:
        # With no rows, ``columns`` (those the writer read) tells "it read the affected rows
        # and there were none" (nothing to delete) from "it read nothing" (no stamps to name).
        complete = bool(columns)
    return keys, complete


# -- registries ---------------------------------------------------------------------------------

#: Separates the epoch and the schemes in a registry value: ``@<epoch>;<scheme>;...``.
SCHEME_SEP = b";"


def parse_registry(raw: bytes | None) -> tuple[bytes, frozenset[str]] | None:
    """``(epoch, schemes)`` of a registry value, or None if it is missing or not ours.

    Every read parses the registries it fetched, and a registry changes only when a table
    gains a scheme or is invalidated whole, so the results are remembered by value.
    """
    if not raw or not raw.startswith(b"@"):
        return None
    parsed = _parsed.get(raw)
    if parsed is None:
        parts = raw.split(SCHEME_SEP)
        parsed = _parsed.put(raw, (parts[0], frozenset(p.decode() for p in parts[1:] if p)))
    return parsed


_parsed: Memo[bytes, tuple[bytes, frozenset[str]]] = Memo(1024)


def scheme_text(cols: Sequence[str]) -> str:
    return ",".join(cols)
