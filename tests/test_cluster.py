"""Redis Cluster: the backend contract, the ORM suites and the process race on a real cluster of
three primaries (scripts/services.sh starts it), plus slot spreading, the local_get channel
across nodes, a primary restarted under load, and a failover of a primary to its replica.

The contract and ORM tests are the ones of tests/test_backends.py, test_store.py, test_lock.py,
test_orm_caching.py and test_orm_invalidation.py, collected here a second time: in this module
``any_backend`` is a :class:`ClusterBackend` and the settings select the cluster engine.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import msgpack
import pytest
import redis
from django.test import override_settings
from redis.cluster import RedisCluster

import freshcache.backends.cluster
import tests.test_backends
import tests.test_concurrency
import tests.test_lock
import tests.test_orm_caching
import tests.test_orm_invalidation
import tests.test_store
from freshcache.backends import get_backend
from freshcache.backends.cluster import ClusterBackend, make_cluster_client
from freshcache.local import CHANNEL, local_gets
from freshcache.store import Plan, Store
from tests.test_concurrency import race
from tests.testapp.models import Author, Category, Post

CLUSTER_URL = os.environ.get("FRESHCACHE_TEST_CLUSTER_URL", "redis://127.0.0.1:7000/0")

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


def _collect(module: ModuleType, which: str, fixtures: tuple[str, ...] = ()) -> None:
    """Collect ``module``'s tests here too: ``'all'``, those taking ``any_backend``
    (``'contract'``) or ``'none'``; and the module fixtures they need."""
    for name, obj in vars(module).items():
        if name in fixtures or _wanted(name, obj, which):
            globals()[name] = obj


def _wanted(name: str, obj: Any, which: str) -> bool:
    if not (name.startswith("test_") and inspect.isfunction(obj)):
        return False
    takes_backend = "any_backend" in inspect.signature(obj).parameters
    return which == "all" or (which == "contract" and takes_backend)


_collect(tests.test_backends, "contract")
_collect(tests.test_store, "contract")
_collect(tests.test_lock, "contract")
_collect(tests.test_orm_caching, "all", fixtures=("data",))
_collect(tests.test_orm_invalidation, "all", fixtures=("c1", "c2"))
_collect(tests.test_concurrency, "none", fixtures=("database",))
test_concurrent_misses_run_one_query = tests.test_lock.test_concurrent_misses_run_one_query


def flush(client: RedisCluster) -> None:
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)


@pytest.fixture(autouse=True)
def on_cluster() -> Iterator[None]:
    """Every test of this module runs with the cluster engine, on an empty cluster."""
    with override_settings(FRESHCACHE_BACKEND="cluster", FRESHCACHE_CLUSTER=CLUSTER_URL):
        backend = get_backend()
        assert isinstance(backend, ClusterBackend)
        flush(backend.client)
        # KEYS runs on one node unless told otherwise; the ORM tests look values up with it.
        backend.client.keys = functools.partial(  # type: ignore[method-assign]
            backend.client.keys, target_nodes=RedisCluster.PRIMARIES
        )
        yield


@pytest.fixture
def any_backend() -> Iterator[ClusterBackend]:
    backend = ClusterBackend(config=CLUSTER_URL)
    flush(backend.client)
    yield backend
    backend.close()


# -- configuration --------------------------------------------------------------------------


def test_config_shapes_reach_the_same_cluster() -> None:
    host, port = CLUSTER_URL.split("//")[1].split("/")[0].split(":")
    shapes: list[Any] = [
        CLUSTER_URL.replace("redis://", "redis+cluster://"),
        {"startup_nodes": [f"redis://{host}:{port}", {"host": host, "port": int(port)}]},
        {"host": host, "port": int(port), "read_from_replicas": True},
    ]
    for shape in shapes:
        client = make_cluster_client(shape)
        assert len(client.get_primaries()) >= 3
        client.close()


def test_a_cluster_that_is_down_is_an_outage_not_a_crash() -> None:
    from freshcache.exceptions import BackendError

    backend = ClusterBackend(config="redis://127.0.0.1:1/0")
    with pytest.raises(BackendError):
        backend.get_many(["a"])
    with override_settings(
        FRESHCACHE_CLUSTER="redis://127.0.0.1:1/0", FRESHCACHE_DEGRADE_ON_FAILURE=True
    ):
        assert Category.objects.filter(title="x").count() == 0  # from the database


# -- keys in every slot ---------------------------------------------------------------------


def test_one_round_trip_reaches_every_node(any_backend: ClusterBackend) -> None:
    """A read of keys on all three primaries is one pipeline: one request per node."""
    keys = [f"fc:s:t:{i}" for i in range(30)]
    assert len(set(any_backend.nodes_of(keys))) >= 3
    any_backend.set_many({k: k.encode() for k in keys}, 60)
    sent: Counter[str] = Counter()
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(connection: Any, command: Any, check_health: bool = True) -> None:
        sent[f"{connection.host}:{connection.port}"] += 1
        original(connection, command, check_health)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
        assert any_backend.get_many(keys) == [k.encode() for k in keys]
    assert len(sent) >= 3 and set(sent.values()) == {1}


def test_cached_reads_spread_their_keys_over_every_primary(queries: Any) -> None:
    category = Category.objects.create(title="c", slug="c")
    for i in range(200):
        Post.objects.create(title=f"p{i}", category=category)
    for i in range(200):
        assert Post.objects.get(title=f"p{i}").category_id == category.pk
    with queries() as q:
        for i in range(200):
            Post.objects.get(title=f"p{i}")
    assert q.count == 0
    client = get_backend().client  # type: ignore[attr-defined]
    sizes = [client.dbsize(target_nodes=node) for node in client.get_primaries()]
    assert len(sizes) >= 3
    assert min(sizes) > sum(sizes) / len(sizes) / 2, f"uneven: {sizes}"


def test_local_get_channel_reaches_a_subscriber_on_another_node() -> None:
    with override_settings(FRESHCACHE={"*.*": {"timeout": 60, "local_get": True}}):
        deadline = time.monotonic() + 10
        while not local_gets._ready():
            assert time.monotonic() < deadline, "the channel never subscribed"
            time.sleep(0.01)
        local_gets.put("entry", ("row",), ["stamp-a"], local_gets.seq)
        assert local_gets.get("entry") == ("row",)
        client = get_backend().client  # type: ignore[attr-defined]
        message = msgpack.packb([b"another process", ["stamp-a"]])
        for node in client.get_primaries():  # whichever node the listener is on
            client.get_redis_connection(node).publish(CHANNEL, message)
            if local_gets.get("entry") is None:
                break
        deadline = time.monotonic() + 5
        while local_gets.get("entry") is not None:
            assert time.monotonic() < deadline, "the message never arrived"
            time.sleep(0.005)
        local_gets.stop()


def test_writers_and_readers_in_separate_processes_on_the_cluster(
    database: dict[str, Any],
) -> None:
    flush(make_cluster_client(CLUSTER_URL))
    race(database, CLUSTER_URL.replace("redis://", "redis+cluster://"))


# -- a primary restarted, a primary failed over ---------------------------------------------------


def _primary_of(client: RedisCluster, key: str) -> tuple[str, int]:
    node = client.nodes_manager.get_node_from_slot(client.keyslot(key))
    return node.host, int(node.port)


def _restart(host: str, port: int) -> None:
    """SHUTDOWN NOSAVE the node, start it again with its own configuration (same node id)."""
    node = redis.Redis(host=host, port=port)
    config = {k: node.config_get(k)[k] for k in ("dir", "cluster-config-file", "cluster-port")}
    command = ["redis-server", "--port", str(port), "--bind", host, "--cluster-enabled", "yes",
               "--cluster-port", config["cluster-port"], "--cluster-config-file",
               config["cluster-config-file"], "--cluster-node-timeout", "3000", "--save", "",
               "--appendonly", "no", "--dir", config["dir"], "--logfile",
               os.path.join(config["dir"], f"{port}.log")]  # fmt: skip
    with contextlib.suppress(redis.ConnectionError):
        node.shutdown(nosave=True)
    # Stopped by scripts/services.sh with the rest of the cluster (SHUTDOWN by port).
    subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            if node.execute_command("CLUSTER INFO").get("cluster_state") == "ok":
                return
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the restarted node did not rejoin"
        time.sleep(0.05)


def _workload(stop: threading.Event, errors: list[BaseException], reads: list[int]) -> None:
    from django.db import connections

    try:
        while not stop.is_set():
            try:
                reads.append(Post.objects.filter(title__startswith="p").count())
                Author.objects.create(name="w")  # a write, invalidating
            except Exception as exc:
                errors.append(exc)
    finally:
        connections.close_all()


def test_a_restarted_primary_is_no_error_and_serves_nothing_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads and writes go on while the primary holding the global epoch restarts (empty):
    the backend retries until it is back, so no error reaches the caller even without
    degrade (the grace is raised here because a loaded machine restarts slowly)."""
    monkeypatch.setattr(freshcache.backends.cluster, "RESTART_GRACE", 60.0)
    category = Category.objects.create(title="c", slug="c")
    Post.objects.create(title="p0", category=category)
    backend = get_backend()
    assert isinstance(backend, ClusterBackend)
    before = backend.generation()
    assert Post.objects.filter(title__startswith="p").count() == 1
    stop, errors, reads = threading.Event(), [], []  # type: ignore[var-annotated]
    worker = threading.Thread(target=_workload, args=(stop, errors, reads))
    worker.start()
    try:
        time.sleep(0.2)
        _restart(*_primary_of(backend.client, "fc:g"))
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(30)
    assert errors == []
    assert reads and set(reads) == {1}
    Post.objects.create(title="p1", category=category)
    assert Post.objects.filter(title__startswith="p").count() == 2
    assert backend.generation() != before  # a new run id: everything cached before is invalid


def test_failover_of_a_primary_rotates_the_generation() -> None:
    """CLUSTER FAILOVER on a replica: it becomes the primary; values cached before are not
    served, even those whose stamp deletions the old primary never replicated."""
    store = Store(backend=get_backend)
    backend = get_backend()
    assert isinstance(backend, ClusterBackend)
    deps = {"post": frozenset({(("category_id", 3),)})}
    plan = Plan.build(deps, "t:")
    probe = store.lookup("k", plan)
    assert probe is not None
    tokens = store.prepare(probe, 60)
    assert tokens is not None and store.save("k", tokens, b"rows", 60, plan)
    assert store.lookup("k", plan).data == b"rows"  # type: ignore[union-attr]
    r_host, r_port = _replica_of(*_primary_of(backend.client, "t:g"))
    promoted = redis.Redis(host=r_host, port=r_port)
    promoted.execute_command("CLUSTER FAILOVER")
    deadline = time.monotonic() + 15
    while promoted.info("replication")["role"] != "master":
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.05)
    # The client learns the new topology on the MOVED it gets, then the new generation.
    deadline = time.monotonic() + 15
    while True:
        probe = store.lookup("k", plan)
        if probe is not None and f"{r_host}:{r_port}" in backend.describe():
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert probe.data is None
    tokens = store.prepare(probe, 60)
    assert tokens is not None and store.save("k", tokens, b"new rows", 60, plan)
    assert store.lookup("k", plan).data == b"new rows"  # type: ignore[union-attr]


def _replica_of(host: str, port: int) -> tuple[str, int]:
    node = redis.Redis(host=host, port=port)
    me = node.execute_command("CLUSTER MYID").decode()
    nodes = node.execute_command("CLUSTER NODES")
    address = next(a for a, n in nodes.items() if n["master_id"] == me and "slave" in n["flags"])
    r_host, r_port = address.split(":")
    return r_host, int(r_port)
