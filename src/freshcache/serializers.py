"""How cached values become bytes, and why two codecs.

Query rows are read on every cache hit, so they get :class:`RowsCodec`: msgpack, whose C
decoder builds the common row (a tuple of ints, strings, floats and ``None``) without running
any Python code, with extension types for the other values database drivers return. Decoding it
cannot execute code, so a payload planted in a shared cache can at worst be wrong data, never a
remote shell.

Everything else (``cached_as`` results, views, fragments) can be any Python object, so it gets
:class:`SignedPickle`: pickle, preceded by an HMAC-SHA256 of the pickle that is checked before
unpickling. The key comes from ``FRESHCACHE_SIGNING_KEY``, or else from ``SECRET_KEY``, so write
access to the cache server is not code execution in every web worker.

Both codecs prefix a two-byte header (codec, format version) so a payload written by the other
codec, or by an older format, is a :class:`~freshcache.exceptions.PayloadError` rather than a
wrong value. Callers treat any ``PayloadError`` as a cache miss.
"""

from __future__ import annotations

import functools
import hmac
import pickle
import struct
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from types import NoneType
from typing import Any, Protocol, runtime_checkable
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
from django.conf import settings
from django.utils.module_loading import import_string

from freshcache.conf import on_reset
from freshcache.conf import settings as fc_settings
from freshcache.exceptions import (
    ImproperlyConfigured,
    PayloadError,
    SerializationError,
    SignatureError,
)

__all__ = [
    "RowsCodec",
    "Serializer",
    "SignedPickle",
    "dumps_rows",
    "dumps_signed",
    "loads_rows",
    "loads_signed",
]


@runtime_checkable
class Serializer(Protocol):
    """What ``FRESHCACHE_SERIALIZER`` names by dotted path.

    ``loads`` should raise :class:`~freshcache.exceptions.PayloadError` for bytes it did not
    write, and ``dumps`` :class:`~freshcache.exceptions.SerializationError` for values it cannot
    store; the cache turns those into a miss and "not cached". Any other exception is treated
    the same way but logged as a warning, since it is a bug in the codec.
    """

    def dumps(self, obj: object) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class RowsCodec:
    """Plain database values (see :func:`dumps_rows`): fast to decode and safe to trust."""

    __slots__ = ()

    def dumps(self, obj: object) -> bytes:
        return dumps_rows(obj)

    def loads(self, data: bytes) -> Any:
        return loads_rows(data)


class SignedPickle:
    """Any picklable object (see :func:`dumps_signed`), authenticated before it is unpickled."""

    __slots__ = ()

    def dumps(self, obj: object) -> bytes:
        return dumps_signed(obj)

    def loads(self, data: bytes) -> Any:
        return loads_signed(data)


_codecs: dict[str, Serializer] = {}
#: The codec of the current settings (every read asks for it; a settings change resets it).
_current: list[Serializer] = []


def rows_codec() -> Serializer:
    """The codec for query rows: ``FRESHCACHE_SERIALIZER`` (a dotted path to a class with
    ``dumps``/``loads``) or the built-in :class:`RowsCodec`. One instance per path."""
    if _current:
        return _current[0]
    path = fc_settings.SERIALIZER or "freshcache.serializers.RowsCodec"
    codec = _codecs.get(path)
    if codec is None:
        codec = _codecs[path] = import_string(path)()
    _current[:] = [codec]
    return codec


on_reset(_current.clear)


# --- rows codec -------------------------------------------------------------------------------
#
# Wire format: b"r\x02" + one msgpack object. Tuples are msgpack arrays, so a row list decodes
# in C with ``use_list=False``; Python lists, which are rarer in results (PostgreSQL arrays,
# JSON), are an extension holding a packed array. Values msgpack has no type for are
# extensions with the codes below; ints outside msgpack's 64-bit range fall through to
# ``_default`` as the packer's overflow path.
#
# Datetimes in ``datetime.timezone.utc`` (what Django reads from PostgreSQL and, with USE_TZ,
# from most backends) are msgpack's own Timestamp extension instead: the unpacker builds them in
# C (``timestamp=3`` gives back exactly that tzinfo), which halves the decoding of a row set
# full of timestamps. Every other datetime keeps its own extension, so a fixed offset's name or
# a ZoneInfo key still comes back unchanged. (Format 1 had no Timestamp; its payloads are
# misses, and a process of the older format reads these as misses too.)

_ROWS_HEADER = b"r\x02"

_LIST = 1
_BIGINT = 2
_DECIMAL = 3
_DATETIME = 4
_DATETIME_FOLD = 5  # fold=1 gets its own code: passing fold= by keyword halves decoding speed
_DATE = 6
_TIME = 7
_TIME_FOLD = 8
_TIMEDELTA = 9
_UUID = 10
_BYTEARRAY = 11
_MEMORYVIEW = 12

# datetime and time are these fields, then a tzinfo suffix when aware.
_DATETIME_FIELDS = struct.Struct("<HBBBBBI")  # year month day hour minute second microsecond
_TIME_FIELDS = struct.Struct("<BBBI")  # hour minute second microsecond
_DATE_FIELDS = struct.Struct("<HBB")
_TIMEDELTA_FIELDS = struct.Struct("<iII")  # days seconds microseconds
_OFFSET_FIELD = struct.Struct("<q")  # UTC offset in microseconds

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)

# A tzinfo suffix starts with one of these.
_TZ_FIXED = 1
_TZ_ZONEINFO = 2

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

# Exact types that can sit in a container unchanged: msgpack packs the first six natively and
# hands the rest to ``_default``. Subclasses (IntEnum, SafeString, ...) are not here on purpose:
# they would come back as their base class.
_LEAVES = frozenset(
    {NoneType, bool, int, float, str, bytes, Decimal, datetime, date, time, timedelta, UUID}
)


def dumps_rows(obj: object) -> bytes:
    """Encode plain database values: rows (tuples), arrays and JSON (lists, dicts), scalars.

    Raises :class:`~freshcache.exceptions.SerializationError`, naming the type, for anything a
    database driver would not return, so that such a result is simply not cached.
    """
    try:
        return _ROWS_HEADER + msgpack.packb(_prepare(obj), default=_default)
    except SerializationError:
        raise
    except Exception as exc:  # RecursionError, lone surrogates, msgpack's nesting limit
        raise SerializationError(f"cannot encode {_type_name(obj)} as rows: {exc}") from exc


def loads_rows(data: bytes) -> Any:
    """Decode :func:`dumps_rows` output; any damage raises only
    :class:`~freshcache.exceptions.PayloadError`, so callers need one ``except`` for a miss."""
    try:
        if data[:2] != _ROWS_HEADER:
            raise PayloadError("not a freshcache rows payload (or from another format version)")
        return _unpack(memoryview(data)[2:])
    except PayloadError:
        raise
    except Exception as exc:
        raise PayloadError(f"corrupt rows payload: {exc!r}") from exc


def _prepare(obj: Any) -> Any:
    """Turn what msgpack would flatten (list vs tuple, bytearray, memoryview) into extensions.

    Runs only on a cache miss. A container whose items are all leaves is passed through without
    a Python-level loop (``issuperset(map(type, ...))`` iterates in C), which is the row case.
    """
    cls = type(obj)
    if cls in _LEAVES:
        return obj
    if cls is tuple:
        return obj if _LEAVES.issuperset(map(type, obj)) else tuple(map(_prepare, obj))
    if cls is list:
        items = obj if _LEAVES.issuperset(map(type, obj)) else tuple(map(_prepare, obj))
        return _ext(_LIST, msgpack.packb(items, default=_default))
    if cls is dict:
        if _LEAVES.issuperset(map(type, obj)) and _LEAVES.issuperset(map(type, obj.values())):
            return obj
        return {_prepare(key): _prepare(value) for key, value in obj.items()}
    if cls is bytearray:
        return _ext(_BYTEARRAY, bytes(obj))
    if cls is memoryview:
        if obj.format != "B" or obj.ndim != 1:
            raise SerializationError(
                f"cannot encode a memoryview of format {obj.format!r} with {obj.ndim} dimensions "
                "as rows: only one-dimensional byte views come back unchanged"
            )
        return _ext(_MEMORYVIEW, obj.tobytes())
    raise SerializationError(f"cannot encode {_type_name(obj)} as rows: not a plain database value")


def _default(obj: Any) -> msgpack.ExtType | msgpack.Timestamp:
    """msgpack's hook for leaves it has no type for, and for ints beyond 64 bits."""
    encode = _ENCODERS.get(type(obj))
    if encode is None:
        raise SerializationError(f"cannot encode {_type_name(obj)} as rows")
    return encode(obj)


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType is a namedtuple whose __new__ re-checks code and data in Python; ours are valid by
    # construction, and building the tuple directly is three times faster, once per value.
    return tuple.__new__(msgpack.ExtType, (code, data))


def _dump_bigint(value: int) -> msgpack.ExtType:
    size = (value.bit_length() + 8) // 8  # + 8, not + 7: room for the sign bit
    return _ext(_BIGINT, value.to_bytes(size, "big", signed=True))


def _dump_decimal(value: Decimal) -> msgpack.ExtType:
    # str() is exact and reversible: it keeps the exponent ("1.50"), "-0", "NaN", "sNaN123"...
    return _ext(_DECIMAL, str(value).encode("ascii"))


def _dump_datetime(value: datetime) -> msgpack.ExtType | msgpack.Timestamp:
    if value.tzinfo is _UTC and not value.fold:
        # Integer arithmetic: a float timestamp would round microseconds far from 1970.
        delta = value - _EPOCH
        return msgpack.Timestamp(delta.days * 86400 + delta.seconds, delta.microseconds * 1000)
    data = _DATETIME_FIELDS.pack(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )
    if value.tzinfo is not None:
        data += _dump_tz(value.tzinfo)
    return _ext(_DATETIME_FOLD if value.fold else _DATETIME, data)


def _dump_date(value: date) -> msgpack.ExtType:
    return _ext(_DATE, _DATE_FIELDS.pack(value.year, value.month, value.day))


def _dump_time(value: time) -> msgpack.ExtType:
    data = _TIME_FIELDS.pack(value.hour, value.minute, value.second, value.microsecond)
    if value.tzinfo is not None:
        data += _dump_tz(value.tzinfo)
    return _ext(_TIME_FOLD if value.fold else _TIME, data)


def _dump_timedelta(value: timedelta) -> msgpack.ExtType:
    return _ext(_TIMEDELTA, _TIMEDELTA_FIELDS.pack(value.days, value.seconds, value.microseconds))


def _dump_uuid(value: UUID) -> msgpack.ExtType:
    return _ext(_UUID, value.bytes)


def _dump_tz(tz: tzinfo) -> bytes:
    """Only the two tzinfo types drivers produce; a key (not rules) for ZoneInfo, so a zone
    comes back as the same ``ZoneInfo`` object, with the reader's current rules."""
    if type(tz) is timezone:
        return _dump_fixed_offset(tz.utcoffset(None), tz.tzname(None))
    if type(tz) is ZoneInfo and tz.key is not None:
        return bytes([_TZ_ZONEINFO]) + tz.key.encode()
    raise SerializationError(
        f"cannot encode tzinfo {_type_name(tz)} ({tz!r}) as rows: only datetime.timezone and "
        "zoneinfo.ZoneInfo with a key are supported"
    )


@functools.lru_cache(maxsize=64)
def _dump_fixed_offset(offset: timedelta, name: str) -> bytes:
    # Keyed by (offset, name), not by the timezone: timezones with different names are equal.
    fixed = bytes([_TZ_FIXED]) + _OFFSET_FIELD.pack(offset // timedelta(microseconds=1))
    # An explicit name is kept; the default one ("UTC+01:00") is implied by the offset.
    return fixed if name == timezone(offset).tzname(None) else fixed + name.encode()


_ENCODERS: dict[type, Callable[[Any], msgpack.ExtType | msgpack.Timestamp]] = {
    int: _dump_bigint,
    Decimal: _dump_decimal,
    datetime: _dump_datetime,
    date: _dump_date,
    time: _dump_time,
    timedelta: _dump_timedelta,
    UUID: _dump_uuid,
}


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(
        data, use_list=False, ext_hook=_ext_hook, strict_map_key=False, timestamp=3
    )


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        decode = _DECODERS[code]
    except KeyError:
        raise PayloadError(f"unknown extension type {code} in a rows payload") from None
    return decode(data)


def _load_list(data: bytes) -> list[Any]:
    items = _unpack(data)
    if type(items) is not tuple:
        raise PayloadError("list extension does not hold an array")
    return list(items)


def _load_bigint(data: bytes) -> int:
    value = int.from_bytes(data, "big", signed=True)
    if _INT64_MIN <= value <= _UINT64_MAX:
        raise PayloadError("big-int extension holds a 64-bit int")  # we never write those
    return value


def _load_decimal(data: bytes) -> Decimal:
    return Decimal(data.decode("ascii"))


def _load_datetime(data: bytes) -> datetime:
    if len(data) == _DATETIME_FIELDS.size:
        return datetime(*_DATETIME_FIELDS.unpack(data))
    year, month, day, hour, minute, second, microsecond = _DATETIME_FIELDS.unpack_from(data)
    tz = _load_tz(data[_DATETIME_FIELDS.size :])
    return datetime(year, month, day, hour, minute, second, microsecond, tz)


def _load_datetime_fold(data: bytes) -> datetime:
    return _load_datetime(data).replace(fold=1)


def _load_date(data: bytes) -> date:
    return date(*_DATE_FIELDS.unpack(data))


def _load_time(data: bytes) -> time:
    if len(data) == _TIME_FIELDS.size:
        return time(*_TIME_FIELDS.unpack(data))
    hour, minute, second, microsecond = _TIME_FIELDS.unpack_from(data)
    return time(hour, minute, second, microsecond, _load_tz(data[_TIME_FIELDS.size :]))


def _load_time_fold(data: bytes) -> time:
    return _load_time(data).replace(fold=1)


def _load_timedelta(data: bytes) -> timedelta:
    return timedelta(*_TIMEDELTA_FIELDS.unpack(data))


def _load_uuid(data: bytes) -> UUID:
    return UUID(bytes=data)


@functools.lru_cache(maxsize=128)
def _load_tz(data: bytes) -> tzinfo:
    """Cached: a result set shares one or two zones across thousands of values."""
    kind, rest = data[0], data[1:]
    if kind == _TZ_FIXED:
        (microseconds,) = _OFFSET_FIELD.unpack_from(rest)
        offset = timedelta(microseconds=microseconds)
        name = rest[_OFFSET_FIELD.size :]
        return timezone(offset, name.decode()) if name else timezone(offset)
    if kind == _TZ_ZONEINFO:
        return ZoneInfo(rest.decode())
    raise PayloadError(f"unknown tzinfo kind {kind} in a rows payload")


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _LIST: _load_list,
    _BIGINT: _load_bigint,
    _DECIMAL: _load_decimal,
    _DATETIME: _load_datetime,
    _DATETIME_FOLD: _load_datetime_fold,
    _DATE: _load_date,
    _TIME: _load_time,
    _TIME_FOLD: _load_time_fold,
    _TIMEDELTA: _load_timedelta,
    _UUID: _load_uuid,
    _BYTEARRAY: bytearray,
    _MEMORYVIEW: memoryview,
}


# --- signed pickle ----------------------------------------------------------------------------
#
# Wire format: b"s\x01" + HMAC-SHA256(key, pickle) + pickle.

_SIGNED_HEADER = b"s\x01"
_MAC_SIZE = 32
_KEY_SALT = b"freshcache.serializers.SignedPickle"


def dumps_signed(obj: object, dump: Callable[[object], bytes] | None = None) -> bytes:
    """Pickle anything picklable, signed so that only holders of the key can make us unpickle.

    Raises :class:`~freshcache.exceptions.SerializationError` for unpicklable objects (locks,
    lambdas, open files...), so that such a value is simply not cached.
    """
    try:
        body = dump(obj) if dump else pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # PicklingError, TypeError, AttributeError, RecursionError...
        raise SerializationError(f"cannot pickle {_type_name(obj)}: {exc}") from exc
    return b"".join((_SIGNED_HEADER, hmac.digest(_signing_key(), body, "sha256"), body))


def loads_signed(data: bytes) -> Any:
    """Verify, then unpickle :func:`dumps_signed` output.

    Raises :class:`~freshcache.exceptions.SignatureError` if the HMAC does not match (another
    key wrote it, or it was tampered with), and :class:`~freshcache.exceptions.PayloadError`
    for anything else that is not a loadable payload; never unpickles unverified bytes.
    """
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise PayloadError(f"signed payload must be bytes, not {_type_name(data)}") from exc
    if len(view) < len(_SIGNED_HEADER) + _MAC_SIZE or view[:2] != _SIGNED_HEADER:
        raise PayloadError("not a freshcache signed payload (or from another format version)")
    mac = view[2 : 2 + _MAC_SIZE]
    body = view[2 + _MAC_SIZE :]
    if not hmac.compare_digest(mac, hmac.digest(_signing_key(), body, "sha256")):
        raise SignatureError("signed payload failed HMAC verification")
    try:
        return pickle.loads(body)
    except Exception as exc:  # verified, so written by us: e.g. a class since renamed
        raise PayloadError(f"signed payload could not be unpickled: {exc!r}") from exc


def _signing_key() -> bytes:
    """Read at call time so ``override_settings`` and key rotation take effect at once."""
    source = getattr(settings, "FRESHCACHE_SIGNING_KEY", None)
    if source is None:
        source = settings.SECRET_KEY
    elif not isinstance(source, (str, bytes)) or not source:
        raise ImproperlyConfigured(
            "FRESHCACHE_SIGNING_KEY must be a non-empty str or bytes, or unset to derive the "
            "key from SECRET_KEY."
        )
    return _derive_key(source.encode() if isinstance(source, str) else source)


@functools.lru_cache(maxsize=8)
def _derive_key(source: bytes) -> bytes:
    # A dedicated key, so a MAC made here is useless against Django's own signing and the reverse.
    return hmac.digest(source, _KEY_SALT, "sha256")


def _type_name(obj: object) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
