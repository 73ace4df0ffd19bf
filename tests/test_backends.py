"""Every engine passes the same contract; configuration shapes build the right client."""

from __future__ import annotations

import asyncio

import pytest
import redis
from django.test import override_settings

from freshcache.backends import backend_name, build_backend, get_backend
from freshcache.backends.base import Backend, Fill
from freshcache.backends.locmem import LocMemBackend
from freshcache.backends.redis import RedisBackend, make_client
from freshcache.exceptions import ImproperlyConfigured

from .conftest import REDIS_URL, flush_test_redis
from .test_store import expire_now


def test_get_many_and_set_many(any_backend: Backend) -> None:
    assert any_backend.get_many(["a", "b"]) == [None, None]
    any_backend.set_many({"a": b"1", "b": b"2"}, 60)
    assert any_backend.get_many(["b", "missing", "a"]) == [b"2", None, b"1"]
    assert any_backend.get_many([]) == []


def test_ttl_is_honoured(any_backend: Backend) -> None:
    any_backend.set_many({"a": b"1"}, 60)
    expire_now(any_backend, "a")
    assert any_backend.get_many(["a"]) == [None]


def test_prepare_runs_writes_in_order_then_reads(any_backend: Backend) -> None:
    any_backend.set_many({"existing": b"keep"}, 60)
    result = any_backend.prepare(
        nx={"existing": b"lost", "new": b"n"},
        appends=[("reg", b"a;"), ("reg", b"b;"), ("new", b"+")],
        overwrite={"over": b"o"},
        ttl=60,
        keys=["existing", "new", "reg", "over", "absent"],
    )
    assert result == [b"keep", b"n+", b"a;b;", b"o", None]


def test_append_creates_without_ttl_and_keeps_existing_ttl(any_backend: Backend) -> None:
    any_backend.prepare({}, [("fresh", b"x")], {}, 60, [])
    if isinstance(any_backend, RedisBackend):
        assert any_backend.client.ttl("fresh") == -1
        any_backend.prepare({"timed": b"@"}, [("timed", b"y")], {}, 60, [])
        assert 0 < any_backend.client.ttl("timed") <= 60
    else:
        assert any_backend._data["fresh"][1] is None  # type: ignore[attr-defined]


def test_delete_and_get(any_backend: Backend) -> None:
    any_backend.set_many({"a": b"1", "b": b"2"}, 60)
    assert any_backend.delete_and_get(["a"], ["a", "b"]) == [None, b"2"]
    any_backend.delete_many(["b", "never-there"])
    assert any_backend.get_many(["b"]) == [None]


def _fill(expect: tuple[bytes, bytes, bytes]) -> Fill:
    return Fill(key="v", check=("g", "r", "s"), expect=expect, token=b"new", payload=b"row",
                ttl=30, stamp_ttl=90)  # fmt: skip


@pytest.mark.parametrize(
    "g, r, s, stored",
    [
        (b"G", b"@E;id;", b"S", True),
        (b"G", b"@E;id;slug;", b"S", True),  # a scheme added since: the epoch is the same
        (b"G", b"@E;id;", b"S2", False),  # the row was invalidated since the load
        (b"G", b"@E;id;", None, False),
        (b"G2", b"@E;id;", b"S", False),  # invalidate_all
        (b"G", b"@E2;id;", b"S", False),  # the table was invalidated whole
        (b"G", None, b"S", False),
        (None, b"@E;id;", b"S", False),
    ],
)
def test_delete_and_get_stores_a_fill_only_if_its_tokens_held(
    any_backend: Backend, g: bytes | None, r: bytes | None, s: bytes | None, stored: bool
) -> None:
    """The write-through's compare-and-store: the check runs before the deletion (which takes
    the stamp itself), the value and the stamp's new token land only if all three held."""
    present = {k: v for k, v in (("g", g), ("r", r), ("s", s)) if v is not None}
    any_backend.prepare({}, [], {**present, "other": b"o"}, 600, [])
    replies = any_backend.delete_and_get(["s", "other"], ["r"], [_fill((b"G", b"@E", b"S"))])
    assert replies == [r]
    values = any_backend.get_many(["g", "r", "s", "other", "v"])
    assert values[3] is None
    if stored and any_backend.fills:
        assert values == [g, r, b"new", None, b"row"]
    else:
        assert values == [g, r, None, None, None]


def test_a_fill_keeps_what_it_depends_on_alive(any_backend: Backend) -> None:
    if not any_backend.fills:
        return
    any_backend.prepare({}, [], {"g": b"G", "s": b"S"}, 10, [])
    any_backend.prepare({}, [("r", b"@E;id;")], {}, 10, [])  # a registry has no TTL
    any_backend.delete_and_get(["s"], [], [_fill((b"G", b"@E", b"S"))])
    if isinstance(any_backend, RedisBackend):
        assert 85 <= any_backend.client.ttl("g") <= 90
        assert any_backend.client.ttl("r") == -1
        assert 85 <= any_backend.client.ttl("s") <= 90
        assert 25 <= any_backend.client.ttl("v") <= 30
    else:
        data = any_backend._data  # type: ignore[attr-defined]
        assert data["r"][1] is None
        assert data["g"][1] == data["s"][1] and data["v"][1] < data["s"][1]


def test_touch_extends_but_never_shortens(any_backend: Backend) -> None:
    any_backend.set_many({"stamp": b"s"}, 10)
    any_backend.set_many({"value": b"v"}, 100, touch=["stamp", "absent"])
    assert any_backend.get_many(["absent"]) == [None]
    if isinstance(any_backend, RedisBackend):
        assert any_backend.client.ttl("stamp") > 10
        any_backend.set_many({"v2": b"v"}, 5, touch=["stamp"])
        assert any_backend.client.ttl("stamp") > 10
    else:
        data = any_backend._data  # type: ignore[attr-defined]
        long_expiry = data["stamp"][1]
        assert long_expiry >= data["value"][1]
        any_backend.set_many({"v2": b"v"}, 5, touch=["stamp"])
        assert data["stamp"][1] == long_expiry


def test_get_many_seeding_creates_only_missing_keys_from_first(any_backend: Backend) -> None:
    any_backend.set_many({"value": b"v", "kept": b"k"}, 60)
    got, seeded = any_backend.get_many_seeding(
        ["value", "head", "kept", "new"], 2, [b"t-kept", b"t-new"], 60
    )
    if not seeded:  # an engine that cannot (the cluster: keys on several nodes) just reads
        assert got == [b"v", None, b"k", None]
        return
    assert got == [b"v", None, b"k", b"t-new"]
    assert any_backend.get_many(["head", "kept", "new"]) == [None, b"k", b"t-new"]
    if isinstance(any_backend, RedisBackend):
        assert 0 < any_backend.client.ttl("new") <= 60


def test_get_many_seeding_extends_what_a_missing_value_depends_on(any_backend: Backend) -> None:
    any_backend.set_many({"hit": b"v", "short": b"s"}, 5)
    any_backend.prepare({}, [("forever", b"x")], {}, 5, [])
    any_backend.get_many_seeding(["hit", "short"], 2, [], 100)  # a hit extends nothing
    if isinstance(any_backend, RedisBackend):
        assert any_backend.client.ttl("short") <= 5
    _, seeded = any_backend.get_many_seeding(["miss", "short", "forever", "stamp"], 3, [b"t"], 100)
    if not seeded:
        return
    if isinstance(any_backend, RedisBackend):
        assert 5 < any_backend.client.ttl("short") <= 100
        assert any_backend.client.ttl("forever") == -1
        assert 5 < any_backend.client.ttl("stamp") <= 100
    else:
        data = any_backend._data  # type: ignore[attr-defined]
        assert data["short"][1] > data["hit"][1] and data["forever"][1] is None


def test_set_many_without_waiting_is_seen_by_the_next_read(any_backend: Backend) -> None:
    any_backend.set_many({"stamp": b"s"}, 10)
    for i in range(50):
        any_backend.set_many({f"k{i}": b"%d" % i}, 60, touch=["stamp"], wait=False)
        # A lookup (what reads a value back) from the same thread sees the write.
        got, _ = any_backend.get_many_seeding([f"k{i}"], 1, [], 60)
        assert got == [b"%d" % i]
    if isinstance(any_backend, RedisBackend) and any_backend.name == "redis":
        assert any_backend._skip_replies is True
        assert 10 < any_backend.client.ttl("stamp") <= 60
        assert 0 < any_backend.client.ttl("k0") <= 60
        assert any_backend.client.ping()  # no reply was left behind on any connection


def test_ping(any_backend: Backend) -> None:
    assert any_backend.ping() is True


def test_async_twins(any_backend: Backend) -> None:
    async def scenario() -> list[bytes | None]:
        await any_backend.aset_many({"a": b"1"}, 60)
        got = await any_backend.aprepare({"b": b"2"}, [], {}, 60, ["a", "b"])
        await any_backend.adelete_many(["a"])
        assert await any_backend.aping()
        assert await any_backend.adelete_and_get([], ["a"]) == [None]
        return got

    assert asyncio.run(scenario()) == [b"1", b"2"]
    assert asyncio.run(any_backend.aget_many(["b"])) == [b"2"]


def test_locmem_is_bounded() -> None:
    backend = LocMemBackend(name="bounded", max_entries=3)
    backend.clear()
    backend.set_many({"a": b"1", "b": b"2", "c": b"3"}, 60)
    backend.get_many(["a"])  # a is now the most recently used
    backend.set_many({"d": b"4"}, 60)
    assert backend.get_many(["a", "b", "c", "d"]) == [b"1", None, b"3", b"4"]


# -- selection and configuration ------------------------------------------------------------------


@override_settings(FRESHCACHE_BACKEND=None, FRESHCACHE_REDIS=None)
def test_locmem_is_the_embedded_default() -> None:
    assert backend_name() == "locmem"
    assert isinstance(get_backend(), LocMemBackend)


@override_settings(FRESHCACHE_BACKEND=None, FRESHCACHE_REDIS="redis://127.0.0.1:1/2")
def test_redis_setting_selects_redis() -> None:
    assert backend_name() == "redis"
    assert isinstance(build_backend(), RedisBackend)


@override_settings(FRESHCACHE_BACKEND="nonsense")
def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="FRESHCACHE_BACKEND"):
        build_backend()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("redis://127.0.0.1:6390/3", {"host": "127.0.0.1", "port": 6390, "db": 3}),
        ("redis://:s3cret@localhost:6379/1", {"password": "s3cret", "db": 1}),
        ("unix:///tmp/redis.sock?db=4", {"path": "/tmp/redis.sock", "db": 4}),
        ({"host": "h", "port": 1234, "db": 5, "socket_timeout": 3}, {"host": "h", "db": 5}),
        ({"unix_socket_path": "/tmp/r.sock", "db": 2}, {"path": "/tmp/r.sock", "db": 2}),
    ],
)
def test_redis_config_shapes(config: object, expected: dict[str, object]) -> None:
    client = make_client(config)  # type: ignore[arg-type]
    kwargs = client.connection_pool.connection_kwargs
    for name, value in expected.items():
        assert kwargs[name] == value


def test_rediss_url_uses_tls() -> None:
    client = make_client("rediss://localhost:6380/0")
    assert client.connection_pool.connection_class is redis.SSLConnection


class MyClient(redis.Redis):
    pass


def test_client_class() -> None:
    assert type(make_client("redis://localhost/0", None, f"{__name__}.MyClient")) is MyClient
    with pytest.raises(ImproperlyConfigured, match="FRESHCACHE_CLIENT_CLASS"):
        make_client("redis://localhost/0", None, "builtins.dict")


def test_sentinel_config_builds_a_managed_client() -> None:
    from redis.sentinel import SentinelConnectionPool

    client = make_client(
        None,
        {
            "locations": [("127.0.0.1", 26379)],
            "service_name": "mymaster",
            "db": 1,
            "socket_timeout": 0.1,
        },
    )
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    assert client.connection_pool.service_name == "mymaster"
    with pytest.raises(ImproperlyConfigured, match="service_name"):
        make_client(None, {"locations": [("127.0.0.1", 26379)]})


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="FRESHCACHE_REDIS"):
        make_client("http://example.invalid/")


def test_hot_path_connections_go_back_to_the_pool_when_threads_end() -> None:
    import gc
    import threading

    flush_test_redis()
    backend = RedisBackend(redis.Redis.from_url(REDIS_URL))
    pool = backend.client.connection_pool

    def lookup() -> None:
        backend.get_many_seeding(["v", "s"], 1, [b"t"], 60)

    threads = [threading.Thread(target=lookup) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.collect()
    assert not pool._in_use_connections  # each thread's connection was handed back
    lookup()
    assert len(pool._in_use_connections) == 1  # this thread keeps its own
    backend.close()


def test_a_reply_that_is_not_the_lookups_own_is_never_used() -> None:
    """A stray reply on the connection (what a server ignoring CLIENT REPLY SKIP would leave)
    makes the lookup fail as a backend error, never read someone else's answer; the next
    lookup runs on a new connection."""
    from freshcache.exceptions import BackendError

    flush_test_redis()
    backend = RedisBackend(redis.Redis.from_url(REDIS_URL))
    backend.set_many({"v": b"value"}, 60)
    backend._pinned._connection().send_command("GET", "v")  # its reply is left unread
    with pytest.raises(BackendError, match="not its own"):
        backend.get_many_seeding(["other", "s"], 1, [b"t"], 60)
    got, _ = backend.get_many_seeding(["v", "s"], 1, [b"t"], 60)
    assert got[0] == b"value"
    backend.close()
