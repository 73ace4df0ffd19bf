"""The Redis Cluster engine: redis-py's ``RedisCluster`` (with hiredis when installed).

``FRESHCACHE_CLUSTER`` is a node URL (``redis://``, ``rediss://``, or ``redis+cluster://`` as
some tools write it) or a dict of ``RedisCluster`` arguments: ``startup_nodes`` as URLs,
``{'host', 'port'}`` dicts or ``(host, port)`` pairs, ``password``, ``ssl``... and
``read_from_replicas`` (off by default: a replica may lag behind its primary, and a stamp read
there could still hold a token the primary already deleted).

The stamp protocol needs no multi-key command, so keys live in any slot: every composite
operation is one non-transactional cluster pipeline of single-key commands, which redis-py
splits by node and sends as one request per node (written to every node before any reply is
read). Commands on one key keep their order, which is all the protocol asks. ``MOVED``/``ASK``
replies are followed by the client; a node that refuses connections (a restart) or a cluster
that answers ``CLUSTERDOWN``/``TRYAGAIN`` is retried for up to :data:`RESTART_GRACE` seconds
before the error counts as an outage. The lock's two keys share a hash tag, so its release
script runs in one slot.

:meth:`ClusterBackend.generation` digests the run ids of the current primaries: a failover or
a restarted primary changes it, and the store then invalidates everything cached before.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlparse

import redis
from django.utils.module_loading import import_string
from redis.cluster import ClusterNode, RedisCluster

from freshcache.backends.base import Fill, options, wrap_errors
from freshcache.backends.redis import PrimaryWatch, RedisBackend
from freshcache.backends.scripts import RELEASE
from freshcache.exceptions import BackendError, ImproperlyConfigured

__all__ = ["RESTART_GRACE", "ClusterBackend", "make_cluster_client"]

#: How long an operation is retried while a node restarts (refuses connections) or the cluster
#: reports itself down or busy, before the failure goes to the store (degrade or raise).
RESTART_GRACE = 3.0
_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)
F = TypeVar("F", bound=Callable[..., Any])

_errors = wrap_errors(redis.RedisError, redis.exceptions.RedisClusterException, OSError)
_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "redis+cluster": "redis",
    "rediss+cluster": "rediss",
}


def riding_out(method: F) -> F:
    """Retry ``method`` with backoff while its failure is transient, up to RESTART_GRACE."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + RESTART_GRACE
        delay = 0.02
        while True:
            try:
                return method(*args, **kwargs)
            except BackendError as exc:
                transient = isinstance(exc.__cause__, _TRANSIENT)
                if not transient or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    return cast(F, wrapper)


def cluster_class(dotted: str | type | None) -> type[RedisCluster]:
    if dotted is None:
        return RedisCluster
    cls = import_string(dotted) if isinstance(dotted, str) else dotted
    if not (isinstance(cls, type) and issubclass(cls, RedisCluster)):
        raise ImproperlyConfigured(
            "with the cluster engine, FRESHCACHE_CLIENT_CLASS must name a subclass of "
            f"redis.cluster.RedisCluster, got {dotted!r}"
        )
    return cls


def cluster_url(url: str) -> str:
    """``url`` as redis-py takes it: ``redis+cluster://`` becomes ``redis://``; db 0 only."""
    parsed = urlparse(url)
    scheme = _SCHEMES.get(parsed.scheme)
    if scheme is None:
        raise ImproperlyConfigured(
            f"FRESHCACHE_CLUSTER {url!r} is not a cluster node URL; write e.g. "
            "'redis://10.0.0.1:7000' or 'rediss://:password@10.0.0.1:7000'"
        )
    db = parsed.path.strip("/")
    if db not in ("", "0"):
        raise ImproperlyConfigured(
            f"FRESHCACHE_CLUSTER {url!r} names database {db}; a Redis Cluster has database 0 only"
        )
    return parsed._replace(scheme=scheme).geturl()


def startup_node(node: Any, conf: dict[str, Any]) -> ClusterNode:
    """One startup node from a URL, a dict or a pair; a URL's credentials and TLS go to
    ``conf`` unless it sets them already."""
    if isinstance(node, ClusterNode):
        return node
    if isinstance(node, str):
        parsed = urlparse(cluster_url(node))
        if parsed.password is not None:
            conf.setdefault("password", unquote(parsed.password))
        if parsed.username:
            conf.setdefault("username", unquote(parsed.username))
        if parsed.scheme == "rediss":
            conf.setdefault("ssl", True)
        return ClusterNode(parsed.hostname or "localhost", parsed.port or 6379)
    if isinstance(node, Mapping) and "host" in node:
        return ClusterNode(node["host"], int(node.get("port", 6379)))
    if isinstance(node, (list, tuple)) and len(node) == 2:
        return ClusterNode(node[0], int(node[1]))
    raise ImproperlyConfigured(
        f"FRESHCACHE_CLUSTER startup node {node!r} is not a URL, a {{'host', 'port'}} dict "
        "or a (host, port) pair"
    )


def cluster_kwargs(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """``RedisCluster`` arguments from the setting; raises ImproperlyConfigured naming the fix."""
    if isinstance(config, str):
        return {"url": cluster_url(config)}
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(
            "FRESHCACHE_CLUSTER must be a node URL or a dict of RedisCluster arguments, "
            f"not {type(config).__name__}"
        )
    conf = options(config)
    if "db" in conf:
        raise ImproperlyConfigured("FRESHCACHE_CLUSTER: a Redis Cluster has no 'db'; remove it")
    if conf.pop("read_from_replicas", False):
        try:  # redis-py >= 5.1; read_from_replicas is deprecated there
            from redis.cluster import LoadBalancingStrategy
        except ImportError:
            conf["read_from_replicas"] = True
        else:
            conf.setdefault("load_balancing_strategy", LoadBalancingStrategy.ROUND_ROBIN)
    nodes = conf.pop("startup_nodes", None)
    if nodes is not None:
        if isinstance(nodes, (str, Mapping)) or not nodes:
            raise ImproperlyConfigured(
                "FRESHCACHE_CLUSTER['startup_nodes'] must be a non-empty list of node URLs, "
                "{'host', 'port'} dicts or (host, port) pairs"
            )
        conf["startup_nodes"] = [startup_node(node, conf) for node in nodes]
    if "url" in conf:
        conf["url"] = cluster_url(conf["url"])
    elif nodes is None and "host" not in conf:
        raise ImproperlyConfigured(
            "FRESHCACHE_CLUSTER needs 'startup_nodes', 'url' or 'host', e.g. "
            "{'startup_nodes': ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7000']}"
        )
    return conf


def make_cluster_client(
    config: str | Mapping[str, Any], client_cls: str | type | None = None
) -> RedisCluster:
    """Connect to the cluster (redis-py reads the slot map from a startup node at once)."""
    cls = cluster_class(client_cls)
    return cls(**cluster_kwargs(config))


class ClusterBackend(RedisBackend):
    """:class:`RedisBackend` with every multi-key command split into single-key ones.

    The client is created on first use, so that a cluster that is down at startup is an
    outage (degraded like any other) rather than an import-time error.
    """

    # One script or one connection cannot span the cluster's slots and nodes.
    _seeding = False
    _skip_replies = False

    name = "cluster"

    def __init__(
        self,
        client: RedisCluster | None = None,
        config: str | Mapping[str, Any] | None = None,
        client_cls: str | type | None = None,
    ) -> None:
        if client is None and config is None:
            raise ImproperlyConfigured("ClusterBackend needs a client or a configuration")
        self._config = config
        self._client_cls = client_cls
        if config is not None:
            cluster_kwargs(config)  # a bad configuration fails now, not on first use
            cluster_class(client_cls)
        self._client: RedisCluster | None = None
        self._client_lock = threading.Lock()
        self._primaries = PrimaryWatch(require_primary=False)
        self._expire_gt = True
        if client is not None:
            self._adopt(client)

    @classmethod
    def from_settings(cls) -> ClusterBackend:
        from freshcache.conf import settings

        config = settings.CLUSTER or settings.REDIS
        if not config:
            raise ImproperlyConfigured(
                "FRESHCACHE_BACKEND='cluster' needs FRESHCACHE_CLUSTER, e.g. "
                "'redis://10.0.0.1:7000' or {'startup_nodes': [...]}"
            )
        return cls(config=config, client_cls=settings.CLIENT_CLASS)

    def _adopt(self, client: RedisCluster) -> None:
        # Connections opened from now on note their server's run id; those the constructor
        # opened already are asked once, in generation().
        client.user_on_connect_func = self._primaries.hook(client.user_on_connect_func)
        self._release = client.register_script(RELEASE)
        self._client = client

    @property
    def client(self) -> RedisCluster:  # type: ignore[override]
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        assert self._config is not None
                        self._adopt(make_cluster_client(self._config, self._client_cls))
                    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                        raise BackendError(f"cannot reach the Redis Cluster: {exc}") from exc
                client = self._client
        assert client is not None
        return client

    @riding_out
    @_errors
    def generation(self) -> bytes | None:
        """A digest of the current primaries' run ids (a failover or a restart changes it)."""
        client = self.client
        ids = []
        for node in client.get_primaries():
            run_id = self._primaries.ids.get(node.name)
            if run_id is None:
                info = client.execute_command("INFO", "server", target_nodes=node)
                run_id = str(info.get("run_id", "")).encode()
                self._primaries.ids[node.name] = run_id
            ids.append(run_id)
        return hashlib.blake2b(b",".join(sorted(ids)), digest_size=8).hexdigest().encode()

    @riding_out
    @_errors
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        if len(keys) == 1:
            return [cast("bytes | None", self.client.get(keys[0]))]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return cast("list[bytes | None]", pipe.execute())

    @riding_out
    def prepare(
        self,
        nx: Mapping[str, bytes],
        appends: Sequence[tuple[str, bytes]],
        overwrite: Mapping[str, bytes],
        ttl: int,
        keys: Sequence[str],
    ) -> list[bytes | None]:
        return super().prepare(nx, appends, overwrite, ttl, keys)

    def _queue_reads(self, pipe: Any, keys: Sequence[str]) -> None:
        for key in keys:  # no cross-slot MGET: the pipeline sends each node its own GETs
            pipe.get(key)

    def _read_replies(self, replies: list[Any], keys: Sequence[str]) -> list[bytes | None]:
        return cast("list[bytes | None]", replies[len(replies) - len(keys) :])

    @riding_out
    @_errors
    def delete_and_get(
        self, delete: Sequence[str], keys: Sequence[str], fills: Sequence[Fill] = ()
    ) -> list[bytes | None]:
        if not delete:
            return self.get_many(keys)
        pipe = self.client.pipeline(transaction=False)
        for key in dict.fromkeys(delete):
            pipe.delete(key)
        for key in keys:
            pipe.get(key)
        replies = pipe.execute()
        return cast("list[bytes | None]", replies[len(replies) - len(keys) :])

    @riding_out
    @_errors
    def lock_release(self, key: str, token: bytes) -> None:
        self.client  # noqa: B018 - connects, which registers the release script
        super().lock_release(key, token)

    set_many = riding_out(RedisBackend.set_many)
    lock_acquire = riding_out(RedisBackend.lock_acquire)
    lock_wait = riding_out(RedisBackend.lock_wait)
    publish = riding_out(RedisBackend.publish)
    ping = riding_out(RedisBackend.ping)

    def _socket_timeout(self) -> float | None:
        timeout = self.client.nodes_manager.connection_kwargs.get("socket_timeout")
        return cast("float | None", timeout)

    def nodes_of(self, keys: Sequence[str]) -> list[str]:
        """The ``host:port`` of the primary holding each key (for the distribution figures)."""
        client = self.client
        manager = client.nodes_manager
        return [manager.get_node_from_slot(client.keyslot(key)).name for key in keys]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def describe(self) -> str:
        if self._client is None:
            return "cluster:(not connected)"
        nodes = sorted(node.name for node in self._client.get_primaries())
        return "cluster:" + ",".join(nodes)
