"""The two codecs: exact round trips, and refusing (with our exceptions only) what they must."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import math
import os
import pickle
import struct
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from django.conf import settings
from django.test import override_settings
from django.utils.safestring import mark_safe
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

if not settings.configured and "DJANGO_SETTINGS_MODULE" not in os.environ:
    settings.configure(SECRET_KEY="freshcache-serializer-tests")  # run without pytest-django

from freshcache.exceptions import (
    ImproperlyConfigured,
    PayloadError,
    SerializationError,
    SignatureError,
)
from freshcache.serializers import (
    RowsCodec,
    Serializer,
    SignedPickle,
    dumps_rows,
    dumps_signed,
    loads_rows,
    loads_signed,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
IST = timezone(timedelta(hours=5, minutes=30))
ROWS_HEADER = dumps_rows(None)[: -len(msgpack.packb(None))]


def ext_code(value: Any) -> int:
    """The extension code the rows codec writes for ``value``, read back with plain msgpack."""
    ext = msgpack.unpackb(dumps_rows(value)[len(ROWS_HEADER) :])
    assert isinstance(ext, msgpack.ExtType)
    return int(ext.code)


LIST = ext_code([])
DATETIME = ext_code(datetime(2024, 1, 1))
DATETIME_FOLD = ext_code(datetime(2024, 1, 1, fold=1))
TIME = ext_code(time(0))
TIME_FOLD = ext_code(time(0, fold=1))
JAN_1_2024 = b"\xe8\x07\x01\x01"  # year (little-endian), month, day
MIDNIGHT = b"\x00" * 7  # hour, minute, second, microsecond (4 bytes)


def assert_identical(result: Any, expected: Any) -> None:
    """Equal, of the same exact type, down to what ``==`` ignores: NaN, -0.0, Decimal exponent,
    tzinfo (type, key, name), fold, list vs tuple."""
    assert type(result) is type(expected), (result, expected)
    if isinstance(expected, float):
        assert struct.pack("<d", result) == struct.pack("<d", expected)
    elif isinstance(expected, Decimal):
        assert result.as_tuple() == expected.as_tuple()
    elif isinstance(expected, (datetime, time)):
        assert result.replace(tzinfo=None) == expected.replace(tzinfo=None)
        assert result.fold == expected.fold
        assert_same_tz(result.tzinfo, expected.tzinfo)
    elif isinstance(expected, (list, tuple)):
        assert len(result) == len(expected)
        for got, want in zip(result, expected, strict=True):
            assert_identical(got, want)
    elif isinstance(expected, dict):
        assert len(result) == len(expected)
        for (got_key, got), (want_key, want) in zip(result.items(), expected.items(), strict=True):
            assert_identical(got_key, want_key)
            assert_identical(got, want)
    elif isinstance(expected, memoryview):
        assert (result.format, result.tobytes()) == (expected.format, expected.tobytes())
    else:
        assert result == expected


def assert_same_tz(result: tzinfo | None, expected: tzinfo | None) -> None:
    assert type(result) is type(expected)
    if isinstance(expected, ZoneInfo):
        assert result is expected  # ZoneInfo(key) is cached, so the same key is the same object
    elif expected is not None:
        assert result == expected
        assert result.tzname(None) == expected.tzname(None)


def round_trip(value: Any) -> Any:
    return loads_rows(dumps_rows(value))


# --- rows codec: round trips -------------------------------------------------------------------

ROW_VALUES = [
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative-int"),
    pytest.param(2**63 - 1, id="int64-max"),
    pytest.param(-(2**63), id="int64-min"),
    pytest.param(2**64 - 1, id="uint64-max"),
    pytest.param(2**64, id="uint64-max-plus-one"),
    pytest.param(-(2**63) - 1, id="int64-min-minus-one"),
    pytest.param(10**100, id="googol"),
    pytest.param(-(10**100), id="negative-googol"),
    pytest.param(1.5, id="float"),
    pytest.param(-0.0, id="negative-zero-float"),
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="negative-inf"),
    pytest.param("", id="empty-str"),
    pytest.param("héllo ☃ \x00", id="str"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(b"\x00\xff", id="bytes"),
    pytest.param(bytearray(b"\x00\xff"), id="bytearray"),
    pytest.param(memoryview(b"\x00\xff"), id="memoryview"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="none"),
    pytest.param(Decimal("1.50"), id="decimal-exponent"),
    pytest.param(Decimal("1E+2"), id="decimal-positive-exponent"),
    pytest.param(Decimal("-0"), id="decimal-negative-zero"),
    pytest.param(Decimal("-0E-7"), id="decimal-negative-zero-exponent"),
    pytest.param(Decimal("NaN"), id="decimal-nan"),
    pytest.param(Decimal("-sNaN42"), id="decimal-signaling-nan-payload"),
    pytest.param(Decimal("Infinity"), id="decimal-infinity"),
    pytest.param(Decimal("-Infinity"), id="decimal-negative-infinity"),
    pytest.param(Decimal("123456789012345678901234567890.123456789"), id="decimal-long"),
    pytest.param(datetime(2024, 2, 29, 23, 59, 59, 999999), id="naive-datetime"),
    pytest.param(datetime(1, 1, 1), id="datetime-min"),
    pytest.param(datetime.max, id="datetime-max"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, 6, timezone.utc), id="utc-datetime"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, 6, IST), id="offset-datetime"),
    pytest.param(
        datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=-3, microseconds=7), "Odd")),
        id="named-offset-datetime",
    ),
    pytest.param(datetime(2024, 7, 1, 12, 0, 0, 1, PARIS), id="zoneinfo-datetime"),
    pytest.param(datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1), id="zoneinfo-fold"),
    pytest.param(datetime(2024, 11, 3, 1, 30, fold=1), id="naive-fold"),
    pytest.param(datetime(2024, 11, 3, 1, 30, tzinfo=IST, fold=1), id="offset-fold"),
    pytest.param(date(2024, 2, 29), id="date"),
    pytest.param(date.min, id="date-min"),
    pytest.param(date.max, id="date-max"),
    pytest.param(time(23, 59, 59, 999999), id="naive-time"),
    pytest.param(time(0, 0), id="midnight"),
    pytest.param(time(12, 30, tzinfo=IST), id="offset-time"),
    pytest.param(time(12, 30, tzinfo=timezone.utc, fold=1), id="utc-time-fold"),
    pytest.param(time(1, 30, 0, 5, fold=1), id="naive-time-fold"),
    pytest.param(timedelta(0), id="zero-timedelta"),
    pytest.param(timedelta(days=3, seconds=4, microseconds=5), id="timedelta"),
    pytest.param(timedelta(microseconds=-1), id="negative-timedelta"),
    pytest.param(timedelta.min, id="timedelta-min"),
    pytest.param(timedelta.max, id="timedelta-max"),
    pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param((), id="empty-tuple"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-dict"),
    pytest.param((1, "a", None, 2.5, True), id="row"),
    pytest.param([(1, "a"), (2, "b")], id="rows"),
    pytest.param([[1, 2], [3, [4]]], id="nested-lists"),
    pytest.param((1, [2, (3, [4])]), id="tuples-and-lists"),
    pytest.param([(1, Decimal("9.99"), datetime(2024, 1, 1, tzinfo=PARIS))], id="rows-ext"),
    pytest.param((bytearray(b"a"), memoryview(b"b"), [bytearray(b"c")]), id="nested-buffers"),
    pytest.param({"a": [1, {"b": None}], "c": {"d": 1.5}}, id="json"),
    pytest.param({1: "int", (1, 2): "tuple", None: "none", b"k": "bytes"}, id="dict-keys"),
    pytest.param({Decimal("1.0"): date(2024, 1, 1), uuid.UUID(int=1): [1]}, id="dict-ext-keys"),
    pytest.param({"rows": [(1, [2])]}, id="dict-of-rows"),
]


@pytest.mark.parametrize("value", ROW_VALUES)
def test_rows_round_trip_is_exact(value: Any) -> None:
    assert_identical(round_trip(value), value)


def test_rows_keep_dict_order() -> None:
    value = {"z": 1, "a": 2, "m": [3]}
    assert list(round_trip(value)) == ["z", "a", "m"]


def test_rows_zoneinfo_comes_back_by_key() -> None:
    result = round_trip(datetime(2024, 7, 1, tzinfo=PARIS))
    assert isinstance(result.tzinfo, ZoneInfo)
    assert result.tzinfo.key == "Europe/Paris"


UTC_EDGES = [
    datetime.min.replace(tzinfo=timezone.utc),
    datetime.max.replace(tzinfo=timezone.utc),
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    datetime(1969, 12, 31, 23, 59, 59, 500000, timezone.utc),  # before 1970, with microseconds
    datetime(1969, 12, 31, 23, 59, 59, 999999, timezone.utc),
    datetime(2106, 2, 7, 6, 28, 16, tzinfo=timezone.utc),  # past 32-bit seconds
    datetime(2514, 5, 30, 1, 53, 3, 999999, timezone.utc),  # the last of 34-bit seconds
    datetime(2514, 5, 30, 1, 53, 4, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 23, 59, 59, 999999, timezone.utc),  # a float timestamp rounds this
]


@pytest.mark.parametrize("value", UTC_EDGES, ids=str)
def test_rows_utc_datetimes_are_msgpack_timestamps(value: datetime) -> None:
    """``timezone.utc`` datetimes travel as msgpack's Timestamp (decoded in C) and come back
    with that very tzinfo; exact over the whole datetime range."""
    raw = msgpack.unpackb(dumps_rows((value,))[len(ROWS_HEADER) :], ext_hook=msgpack.ExtType)
    assert type(raw[0]) is msgpack.Timestamp
    result = round_trip(value)
    assert result == value and result.tzinfo is timezone.utc and result.fold == 0
    assert result.replace(tzinfo=None) == value.replace(tzinfo=None)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(0), "UTC")),  # equal to utc, not it
        datetime(2024, 1, 1, tzinfo=timezone.utc, fold=1),
        datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC")),
    ],
    ids=["named-zero-offset", "utc-fold", "zoneinfo-utc"],
)
def test_rows_other_utc_spellings_keep_their_tzinfo(value: datetime) -> None:
    raw = msgpack.unpackb(dumps_rows((value,))[len(ROWS_HEADER) :], ext_hook=msgpack.ExtType)
    assert type(raw[0]) is msgpack.ExtType
    assert_identical(round_trip(value), value)


def test_rows_of_the_previous_format_are_misses() -> None:
    with pytest.raises(PayloadError, match="another format version"):
        loads_rows(b"r\x01" + msgpack.packb([(1, "a")]))


def test_rows_memoryview_comes_back_as_memoryview() -> None:
    result = round_trip([memoryview(bytearray(b"abc"))])
    assert type(result[0]) is memoryview
    assert result[0] == b"abc"


def test_rows_codec_class_matches_functions() -> None:
    codec = RowsCodec()
    assert isinstance(codec, Serializer)
    assert codec.dumps([(1,)]) == dumps_rows([(1,)])
    assert_identical(codec.loads(codec.dumps([(1, [2])])), [(1, [2])])


# --- rows codec: property test ----------------------------------------------------------------

fixed_offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
named_offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
    st.text(min_size=1, max_size=8),
)
offsets = fixed_offsets | named_offsets
hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.binary()
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False)
)
leaves = (
    hashable_leaves
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.binary().map(bytearray)
    | st.binary().map(memoryview)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.datetimes(timezones=st.none() | st.timezones() | offsets)
    | st.times(timezones=st.none() | offsets)
    | st.timedeltas()
)
hashable_keys = hashable_leaves | st.tuples(hashable_leaves, hashable_leaves)
plain_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(hashable_keys, children, max_size=5)
    ),
    max_leaves=25,
)


@hypothesis_settings(deadline=None)
@given(plain_values)
def test_rows_round_trip_property(value: Any) -> None:
    assert_identical(round_trip(value), value)


# --- rows codec: refusals ---------------------------------------------------------------------


class Color(IntEnum):
    RED = 1


class CustomTz(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param({1, 2}, "set", id="set"),
        pytest.param(frozenset(), "frozenset", id="frozenset"),
        pytest.param(object(), "object", id="object"),
        pytest.param(1j, "complex", id="complex"),
        pytest.param(Color.RED, "Color", id="int-subclass"),
        pytest.param(mark_safe("<b>"), "SafeString", id="str-subclass"),
        pytest.param(OrderedDict(a=1), "OrderedDict", id="dict-subclass"),
        pytest.param([(1, "a"), (2, {3})], "set", id="nested-in-rows"),
        pytest.param({"a": {"b": [object()]}}, "object", id="nested-in-json"),
        pytest.param({frozenset(): 1}, "frozenset", id="dict-key"),
        pytest.param(datetime(2024, 1, 1, tzinfo=CustomTz()), "CustomTz", id="custom-tzinfo"),
        pytest.param(memoryview(b"\x00" * 8).cast("i"), "memoryview", id="int-memoryview"),
    ],
)
def test_rows_refuse_non_plain_values(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError, match=type_name):
        dumps_rows(value)


def test_rows_refuse_zoneinfo_without_key() -> None:
    # The smallest TZif file: no transitions, one "UTC" type; from_file gives it no key.
    counts = struct.pack(">6l", 0, 0, 0, 0, 1, 4)
    tzif = b"TZif" + b"\x00" * 16 + counts + struct.pack(">lBB", 0, 0, 0) + b"UTC\x00"
    keyless = ZoneInfo.from_file(io.BytesIO(tzif))
    with pytest.raises(SerializationError, match="ZoneInfo"):
        dumps_rows(datetime(2024, 1, 1, tzinfo=keyless))


def test_rows_refuse_too_deep_nesting() -> None:
    value: list[Any] = []
    for _ in range(10_000):
        value = [value]
    with pytest.raises(SerializationError):
        dumps_rows(value)


# --- rows codec: damaged payloads -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"r", id="half-header"),
        pytest.param(ROWS_HEADER, id="header-only"),
        pytest.param(b"garbage that is not a payload", id="garbage"),
        pytest.param(msgpack.packb([1, 2]), id="msgpack-without-header"),
        pytest.param(ROWS_HEADER + b"\xc1", id="never-used-byte"),
        pytest.param(ROWS_HEADER + b"\xff\xfe", id="trailing-data"),
        pytest.param(ROWS_HEADER + msgpack.packb("é")[:-1], id="truncated-utf8"),
        pytest.param(ROWS_HEADER + b"\xa2\xff\xfe", id="invalid-utf8"),
        pytest.param(
            ROWS_HEADER + b"\x81" + msgpack.packb(msgpack.ExtType(LIST, b"\x90")) + b"\x01",
            id="unhashable-list-key",
        ),
        pytest.param(b"s\x01" + b"\x00" * 40, id="signed-payload"),
        pytest.param("r\x01\x01", id="str-not-bytes"),
        pytest.param(None, id="none"),
    ],
)
def test_rows_garbage_is_payload_error(data: Any) -> None:
    with pytest.raises(PayloadError):
        loads_rows(data)


@pytest.mark.parametrize(
    "value",
    [
        [(1, "abc", None, 1.5)],
        {"a": [1, 2, {"b": "c"}]},
        (Decimal("1.50"), datetime(2024, 1, 1, tzinfo=PARIS), 2**70, uuid.UUID(int=5)),
        [date(2024, 1, 1), time(1, 2, tzinfo=IST), timedelta(days=-1), bytearray(b"x")],
    ],
)
def test_rows_every_truncation_is_payload_error(value: Any) -> None:
    data = dumps_rows(value)
    for end in range(len(data)):
        with pytest.raises(PayloadError):
            loads_rows(data[:end])


@pytest.mark.parametrize("code", [0, 42, 127, -2, -128])
def test_rows_unknown_extension_is_payload_error(code: int) -> None:
    fixext1 = b"\xd4" + struct.pack("b", code) + b"x"  # msgpack.ExtType refuses negative codes
    with pytest.raises(PayloadError, match="unknown extension"):
        loads_rows(ROWS_HEADER + b"\x91" + fixext1)


@pytest.mark.parametrize(
    "ext",
    [
        pytest.param(msgpack.ExtType(LIST, msgpack.packb(5)), id="list-of-non-array"),
        pytest.param(msgpack.ExtType(LIST, msgpack.packb("ab")), id="list-of-str"),
        pytest.param(msgpack.ExtType(ext_code(2**64), b"\x05"), id="small-bigint"),
        pytest.param(msgpack.ExtType(ext_code(Decimal(1)), b"not a number"), id="decimal"),
        pytest.param(msgpack.ExtType(ext_code(Decimal(1)), b"\xff"), id="decimal-non-ascii"),
        pytest.param(msgpack.ExtType(DATETIME, b"\x00" * 11), id="datetime-year-zero"),
        pytest.param(msgpack.ExtType(DATETIME, JAN_1_2024 + b"\x18" + MIDNIGHT[1:]), id="hour-24"),
        pytest.param(msgpack.ExtType(DATETIME, JAN_1_2024 + MIDNIGHT[1:]), id="datetime-short"),
        pytest.param(msgpack.ExtType(DATETIME, JAN_1_2024 + MIDNIGHT + b"\x09"), id="tz-kind"),
        pytest.param(msgpack.ExtType(DATETIME, JAN_1_2024 + MIDNIGHT + b"\x01\x00"), id="offset"),
        pytest.param(
            msgpack.ExtType(
                DATETIME, JAN_1_2024 + MIDNIGHT + b"\x01" + struct.pack("<q", 24 * 3600 * 10**6)
            ),
            id="offset-out-of-range",
        ),
        pytest.param(
            msgpack.ExtType(DATETIME, JAN_1_2024 + MIDNIGHT + b"\x02No/Such_Zone"), id="zone"
        ),
        pytest.param(
            msgpack.ExtType(DATETIME, JAN_1_2024 + MIDNIGHT + b"\x02../../etc/passwd"),
            id="zone-path",
        ),
        pytest.param(msgpack.ExtType(DATETIME_FOLD, b"\x00" * 11), id="datetime-fold-year-0"),
        pytest.param(msgpack.ExtType(ext_code(date(2024, 1, 1)), b"\xe8\x07\x0d\x01"), id="month"),
        pytest.param(msgpack.ExtType(ext_code(date(2024, 1, 1)), JAN_1_2024 + b"\x00"), id="date"),
        pytest.param(msgpack.ExtType(TIME, b"\x19" + MIDNIGHT[1:]), id="time-hour-25"),
        pytest.param(msgpack.ExtType(TIME_FOLD, MIDNIGHT[1:]), id="time-fold-short"),
        pytest.param(
            msgpack.ExtType(ext_code(timedelta(1)), b"\xff\xff\xff\x7f" + b"\x00" * 8),
            id="timedelta-days",
        ),
        pytest.param(msgpack.ExtType(ext_code(uuid.UUID(int=0)), b"\x00" * 15), id="uuid-short"),
    ],
)
def test_rows_malformed_extension_is_payload_error(ext: msgpack.ExtType) -> None:
    with pytest.raises(PayloadError):
        loads_rows(ROWS_HEADER + msgpack.packb(ext))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x00" * 5, id="length"),
        pytest.param(struct.pack(">Iq", 0, 2**62), id="out-of-range"),
        pytest.param(struct.pack(">Iq", 10**9, 0), id="nanoseconds"),
    ],
)
def test_rows_malformed_timestamp_is_payload_error(body: bytes) -> None:
    ext = b"\xc7" + bytes([len(body)]) + b"\xff" + body  # ext 8 of type -1 (Timestamp)
    with pytest.raises(PayloadError):
        loads_rows(ROWS_HEADER + ext)


@given(st.binary())
def test_rows_arbitrary_bytes_only_raise_payload_error(junk: bytes) -> None:
    with contextlib.suppress(PayloadError):
        loads_rows(ROWS_HEADER + junk)


@given(plain_values, st.data())
def test_rows_bit_flips_only_raise_payload_error(value: Any, data: st.DataObject) -> None:
    payload = bytearray(dumps_rows(value))
    position = data.draw(st.integers(min_value=len(ROWS_HEADER), max_value=len(payload) - 1))
    payload[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with contextlib.suppress(PayloadError):
        loads_rows(bytes(payload))


# --- signed pickle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class UnloadableAfterVerification:
    """Pickles fine; unpickling calls ``int("not a number")``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (int, ("not a number",))


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"a": [1, (2, 3)], "b": {4, 5}},
        Point(1, 2),
        [Decimal("1.50"), datetime(2024, 1, 1, tzinfo=PARIS), frozenset({1})],
        OrderedDict(a=1),
    ],
)
def test_signed_round_trip(value: Any) -> None:
    assert loads_signed(dumps_signed(value)) == value


def test_signed_codec_class_matches_functions() -> None:
    codec = SignedPickle()
    assert isinstance(codec, Serializer)
    assert codec.loads(codec.dumps(Point(3, 4))) == Point(3, 4)


def test_signed_uses_highest_pickle_protocol() -> None:
    data = dumps_signed([1])
    body = data[2 + 32 :]
    assert body[:2] == bytes([0x80, pickle.HIGHEST_PROTOCOL])


@pytest.mark.parametrize("position", [2, 33, 34, -1], ids=["mac", "mac-end", "body", "end"])
def test_signed_tampering_is_signature_error(position: int) -> None:
    data = bytearray(dumps_signed({"user": 1}))
    data[position] ^= 1
    with pytest.raises(SignatureError):
        loads_signed(bytes(data))


def test_signed_other_format_version_is_payload_error_not_signature_error() -> None:
    data = bytearray(dumps_signed({"user": 1}))
    data[1] ^= 1
    with pytest.raises(PayloadError) as caught:
        loads_signed(bytes(data))
    assert not isinstance(caught.value, SignatureError)


def test_signed_appended_bytes_is_signature_error() -> None:
    with pytest.raises(SignatureError):
        loads_signed(dumps_signed("x") + b"\x00")


def test_signed_every_truncation_is_payload_error() -> None:
    data = dumps_signed({"a": 1})
    for end in range(len(data)):
        with pytest.raises(PayloadError):
            loads_signed(data[:end])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage" * 10, id="garbage"),
        pytest.param(pickle.dumps({"a": 1}), id="unsigned-pickle"),
        pytest.param(dumps_rows([1, 2, 3]), id="rows-payload"),
        pytest.param("s\x01" + "x" * 40, id="str-not-bytes"),
        pytest.param(None, id="none"),
    ],
)
def test_signed_garbage_is_payload_error(data: Any) -> None:
    with pytest.raises(PayloadError):
        loads_signed(data)


@given(st.binary())
def test_signed_arbitrary_bytes_only_raise_payload_error(junk: bytes) -> None:
    with pytest.raises(PayloadError):
        loads_signed(junk)


def test_signed_unloadable_body_is_payload_error() -> None:
    data = dumps_signed(UnloadableAfterVerification())
    with pytest.raises(PayloadError, match="unpickled") as caught:
        loads_signed(data)
    assert not isinstance(caught.value, SignatureError)


def test_signed_different_secret_key_is_signature_error() -> None:
    with override_settings(SECRET_KEY="first-secret"):
        data = dumps_signed("value")
    with override_settings(SECRET_KEY="second-secret"), pytest.raises(SignatureError):
        loads_signed(data)
    with override_settings(SECRET_KEY="first-secret"):
        assert loads_signed(data) == "value"


def test_signed_override_settings_changes_the_key() -> None:
    data = dumps_signed("value")
    with override_settings(SECRET_KEY="another-secret"):
        with pytest.raises(SignatureError):
            loads_signed(data)
        assert loads_signed(dumps_signed("other")) == "other"
    assert loads_signed(data) == "value"


def test_signing_key_takes_precedence_over_secret_key() -> None:
    with override_settings(FRESHCACHE_SIGNING_KEY="signing", SECRET_KEY="first-secret"):
        data = dumps_signed("value")
    with override_settings(FRESHCACHE_SIGNING_KEY="signing", SECRET_KEY="second-secret"):
        assert loads_signed(data) == "value"
    with override_settings(FRESHCACHE_SIGNING_KEY=b"signing"):
        assert loads_signed(data) == "value"  # bytes and str name the same key
    with (
        override_settings(FRESHCACHE_SIGNING_KEY="other", SECRET_KEY="first-secret"),
        pytest.raises(SignatureError),
    ):
        loads_signed(data)
    with override_settings(SECRET_KEY="first-secret"), pytest.raises(SignatureError):
        loads_signed(data)


def test_signing_key_is_not_the_raw_secret() -> None:
    """A MAC keyed with SECRET_KEY itself (e.g. made by other code) must not verify."""
    body = pickle.dumps("value", protocol=pickle.HIGHEST_PROTOCOL)
    for key in (
        settings.SECRET_KEY.encode(),
        hashlib.sha256(settings.SECRET_KEY.encode()).digest(),
    ):
        forged = b"s\x01" + hmac.digest(key, body, "sha256") + body
        with pytest.raises(SignatureError):
            loads_signed(forged)


@pytest.mark.parametrize("bad_key", ["", b"", 42])
def test_invalid_signing_key_is_improperly_configured(bad_key: object) -> None:
    with override_settings(FRESHCACHE_SIGNING_KEY=bad_key), pytest.raises(ImproperlyConfigured):
        dumps_signed("value")


def _generator() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param(lambda: None, "function", id="lambda"),
        pytest.param(threading.Lock(), "lock", id="lock"),
        pytest.param(_generator(), "generator", id="generator"),
        pytest.param({"nested": [threading.Lock()]}, "dict", id="nested-lock"),
    ],
)
def test_signed_unpicklable_is_serialization_error(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError, match=type_name):
        dumps_signed(value)


def test_signed_local_class_is_serialization_error() -> None:
    class Local:
        pass

    with pytest.raises(SerializationError, match="Local"):
        dumps_signed(Local())
