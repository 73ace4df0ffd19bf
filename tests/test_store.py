"""The stamp protocol under interleavings, driven step by step (no sleeps, no threads)."""

from __future__ import annotations

import logging
import socket

import msgpack
import pytest
import redis
from django.test import override_settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from freshcache.backends.base import Backend
from freshcache.backends.redis import RedisBackend
from freshcache.exceptions import BackendError
from freshcache.stamps import stamp_key
from freshcache.store import Plan, Store, TableChange

P = "t:"
CAT3 = {"post": frozenset({(("category_id", 3),)})}
CAT4 = {"post": frozenset({(("category_id", 4),)})}
WHOLE = {"post": frozenset({()})}
TTL = 60


def make(backend: Backend) -> Store:
    return Store(backend=lambda: backend)


def store_value(store: Store, key: str, deps: dict, data: bytes) -> None:
    plan = Plan.build(deps, P)
    probe = store.lookup(key, plan)
    assert probe is not None
    tokens = store.prepare(probe, TTL)
    assert tokens is not None
    assert store.save(key, tokens, data, TTL, plan)


def read(store: Store, key: str, deps: dict) -> bytes | None:
    probe = store.lookup(key, Plan.build(deps, P))
    assert probe is not None
    return probe.data


def row(category_id: int, id: int = 1) -> TableChange:
    return TableChange(
        table="post",
        rows=[{"id": id, "category_id": category_id}],
        columns=frozenset({"id", "category_id"}),
    )


def test_miss_then_hit(any_backend: Backend) -> None:
    store = make(any_backend)
    assert read(store, "k", CAT3) is None
    store_value(store, "k", CAT3, b"rows")
    assert read(store, "k", CAT3) == b"rows"


def test_hit_is_one_round_trip(any_backend: Backend) -> None:
    calls: list[str] = []

    class Counting(type(any_backend)):  # type: ignore[misc]
        def get_many(self, keys):  # type: ignore[no-untyped-def]
            calls.append("get_many")
            return super().get_many(keys)

    counting = Counting.__new__(Counting)
    counting.__dict__.update(any_backend.__dict__)
    store = make(counting)
    store_value(store, "k", CAT3, b"rows")
    calls.clear()
    assert read(store, "k", CAT3) == b"rows"
    assert calls == ["get_many"]


def test_seeded_lookup_needs_no_prepare_round_trip_and_stays_safe(any_backend: Backend) -> None:
    """A lookup given the TTL creates the missing stamp itself: the miss's prepare then costs
    no round trip once the registry lists the scheme, and a write between the lookup and the
    store still keeps the stored value from being served."""
    store = make(any_backend)
    store_value(store, "first", CAT3, b"registers the scheme")
    plan = Plan.build(CAT4, P)
    probe = store.lookup("k", plan, TTL)
    assert probe is not None
    seeded = probe.touched  # the cluster cannot: keys on several nodes
    assert (None not in probe.current) == seeded
    calls: list[str] = []
    prepare = any_backend.prepare

    def counting(*args: object) -> object:
        calls.append("prepare")
        return prepare(*args)  # type: ignore[arg-type]

    any_backend.prepare = counting  # type: ignore[method-assign]
    tokens = store.prepare(probe, TTL)
    assert tokens is not None and calls == ([] if seeded else ["prepare"])
    make(any_backend).invalidate([row(4)], P)
    assert store.save("k", tokens, b"old rows", TTL, plan)
    assert read(store, "k", CAT4) is None
    probe = store.lookup("k", plan, TTL)
    assert probe is not None
    tokens = store.prepare(probe, TTL)
    assert tokens is not None
    assert store.save("k", tokens, b"new rows", TTL, plan, wait=False)
    assert read(store, "k", CAT4) == b"new rows"


def test_invalidate_between_prepare_and_save_is_never_served(any_backend: Backend) -> None:
    """Reader reads stamps, writer commits and invalidates, reader stores old rows: miss."""
    store = make(any_backend)
    plan = Plan.build(CAT3, P)
    probe = store.lookup("k", plan)
    assert probe is not None
    tokens = store.prepare(probe, TTL)
    assert tokens is not None
    writer = make(any_backend)
    writer.invalidate([row(3)], P)
    assert store.save("k", tokens, b"old rows", TTL, plan)  # stored after the invalidation
    assert read(store, "k", CAT3) is None


def test_invalidation_during_compute_returns_value_to_caller_only(any_backend: Backend) -> None:
    store = make(any_backend)
    plan = Plan.build(CAT3, P)

    def compute() -> bytes:
        make(any_backend).invalidate([row(3)], P)
        return b"computed"

    value, hit = store.get_or_compute("k", plan, compute, bytes, bytes, TTL)
    assert (value, hit) == (b"computed", False)
    assert read(store, "k", CAT3) is None


def test_invalidation_is_granular_and_uses_old_and_new_values(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k3", CAT3, b"3")
    store_value(store, "k4", CAT4, b"4")
    store.invalidate([row(4)], P)
    assert read(store, "k3", CAT3) == b"3"
    assert read(store, "k4", CAT4) is None
    store_value(store, "k4", CAT4, b"4")
    # A row moving from category 3 to 5 (old and new values) invalidates 3, not 4.
    store.invalidate(
        [
            TableChange(
                table="post",
                rows=[{"id": 1, "category_id": 3}, {"id": 1, "category_id": 5}],
                columns=frozenset({"id", "category_id"}),
            )
        ],
        P,
    )
    assert read(store, "k3", CAT3) is None
    assert read(store, "k4", CAT4) == b"4"


def test_table_wide_dependency_sees_every_row_write(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "all", WHOLE, b"all")
    store.invalidate([row(99)], P)
    assert read(store, "all", WHOLE) is None


def test_evicted_stamp_is_a_miss(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    any_backend.delete_many([stamp_key(P, "post", (("category_id", 3),))])
    assert read(store, "k", CAT3) is None


def test_stamp_recreated_after_expiry_is_a_miss(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"old")
    key = stamp_key(P, "post", (("category_id", 3),))
    any_backend.delete_many([key])  # what expiry does
    # Another reader re-creates the stamp (a new random token) without storing "k".
    other = Plan.build(CAT3, P)
    probe = store.lookup("other", other)
    assert probe is not None and store.prepare(probe, TTL) is not None
    assert any_backend.get_many([key])[0] is not None
    assert read(store, "k", CAT3) is None


def test_lost_registry_invalidates_the_table(any_backend: Backend) -> None:
    """A writer that finds no registry skips granular stamps; the epoch makes that safe."""
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    any_backend.delete_many([f"{P}r:post"])  # eviction, flush, failover
    writer = make(any_backend)
    writer.invalidate([row(3)], P)
    assert read(store, "k", CAT3) is None


def test_scheme_registered_after_the_writer_looked(any_backend: Backend) -> None:
    """The writer's view of the schemes is stale; its post-write registry check catches up."""
    store = make(any_backend)
    writer = make(any_backend)
    assert writer.known_schemes(P, "post") == frozenset()  # nothing registered yet
    store_value(store, "k", CAT3, b"rows")  # registers category_id
    # The writer read only the primary key (what it thought the schemes needed).
    writer.invalidate([TableChange(table="post", rows=[{"id": 1}], columns=frozenset({"id"}))], P)
    assert read(store, "k", CAT3) is None


def test_invalidate_all_and_model(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    store.invalidate_tables(["post"], P)
    assert read(store, "k", CAT3) is None
    store_value(store, "k", CAT3, b"rows")
    store.invalidate_all(P)
    assert read(store, "k", CAT3) is None


def test_other_prefix_is_untouched(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    store.invalidate_all("other:")
    store.invalidate_tables(["post"], "other:")
    assert read(store, "k", CAT3) == b"rows"


def test_garbage_payload_is_a_logged_miss(
    any_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    any_backend.set_many({"k": b"\xc1\xff garbage"}, TTL)
    with caplog.at_level(logging.WARNING, logger="freshcache"):
        assert read(store, "k", CAT3) is None
    assert "undecodable payload" in caplog.text


def test_payload_with_foreign_tokens_is_a_miss(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    any_backend.set_many({"k": msgpack.packb([[b"x", b"y", b"z"], b"forged"])}, TTL)
    assert read(store, "k", CAT3) is None


def test_expired_value_is_a_miss(any_backend: Backend) -> None:
    store = make(any_backend)
    store_value(store, "k", CAT3, b"rows")
    expire_now(any_backend, "k")
    assert read(store, "k", CAT3) is None


def expire_now(backend: Backend, key: str) -> None:
    """Make ``key`` reach its TTL without sleeping."""
    if isinstance(backend, RedisBackend):
        backend.client.pexpireat(key, 1)  # a time in the past: expired at once
    else:
        with backend._lock:  # type: ignore[attr-defined]
            value, _ = backend._data[key]  # type: ignore[attr-defined]
            backend._data[key] = (value, 0.0)  # type: ignore[attr-defined]


def _dead_redis() -> RedisBackend:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    no_retry = Retry(NoBackoff(), 0)
    return RedisBackend(
        redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=no_retry)
    )


def test_backend_down_raises_without_degrade() -> None:
    store = make(_dead_redis())
    with pytest.raises(BackendError):
        store.lookup("k", Plan.build(CAT3, P))


@override_settings(FRESHCACHE_DEGRADE_ON_FAILURE=True)
def test_backend_down_degrades_and_remembers_missed_invalidations(
    caplog: pytest.LogCaptureFixture, any_backend: Backend
) -> None:
    healthy = make(any_backend)
    store_value(healthy, "k", CAT3, b"stale soon")
    dead = _dead_redis()
    flaky = Store(backend=lambda: current[0])
    current = [dead]
    with caplog.at_level(logging.WARNING, logger="freshcache"):
        assert flaky.lookup("k", Plan.build(CAT3, P)) is None
        flaky.invalidate([row(3)], P)  # lost: the backend is down
    assert "unavailable" in caplog.text
    # The backend answers again: the missed table is invalidated before anything is served.
    current[0] = any_backend
    # Until the retry slot comes, the backend is not even tried: reads go to the database.
    assert flaky.lookup("k", Plan.build(CAT3, P)) is None
    flaky._retry_at = 0.0
    assert flaky.lookup("k", Plan.build(CAT3, P)) is not None
    assert read(healthy, "k", CAT3) is None
