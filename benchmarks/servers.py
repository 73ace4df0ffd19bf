"""The Redis a library caches in, seen the same way whether it is one database or a cluster.

A library on the single Redis owns one database number of a server it shares with the others:
flushing it is ``FLUSHDB`` there, its keys are that database's ``DBSIZE``, and its memory is the
server's ``used_memory``. A library on the Redis Cluster owns the whole cluster, which has
database 0 only: flushing is ``FLUSHALL`` on every primary (the replicas follow), and keys,
memory and commands processed are summed over the primaries, each primary also reported alone
(the key distribution).

Memory is ``used_memory`` less the replication backlog and the replicas' output buffers: a
primary's backlog fills up with the writes it replicates (up to ``repl-backlog-size``, 1 MiB by
default) and ``FLUSHALL`` does not empty it, so counting it would charge the cache with the
replication stream. On the single Redis, which has no replica, both are zero.

Imported by the workers (redis-py is in every library's venv), never by the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["NodeStats", "RedisTarget"]


@dataclass(frozen=True)
class NodeStats:
    name: str
    #: ``used_memory`` less ``mem_replication_backlog`` and ``mem_clients_slaves``.
    used_memory: int
    keys: int
    #: ``total_commands_processed`` since the server started.
    commands: int


class RedisTarget:
    """One library's Redis: a database URL, or a cluster node URL with ``cluster=True``."""

    def __init__(self, url: str, cluster: bool = False) -> None:
        import redis

        self.url = url
        self.cluster = cluster
        self._cluster_client: Any = None
        self._client: Any = None
        if cluster:
            from redis.cluster import RedisCluster

            self._cluster_client = RedisCluster.from_url(url)
        else:
            self._client = redis.Redis.from_url(url)

    def primaries(self) -> list[tuple[str, Any]]:
        """``(host:port, redis.Redis)`` per primary, sorted by address; the server itself for a
        single Redis."""
        if not self.cluster:
            return [(self.url, self._client)]
        client = self._cluster_client
        nodes = sorted(client.get_primaries(), key=lambda node: node.name)
        return [(node.name, client.get_redis_connection(node)) for node in nodes]

    def flush(self) -> None:
        if not self.cluster:
            self._client.flushdb()
            return
        for _, node in self.primaries():
            node.flushall()

    def nodes(self) -> list[NodeStats]:
        out = []
        for name, node in self.primaries():
            info = node.info()
            replication = int(info.get("mem_replication_backlog", 0)) + int(
                info.get("mem_clients_slaves", 0)
            )
            out.append(
                NodeStats(
                    name=name,
                    used_memory=int(info["used_memory"]) - replication,
                    keys=int(node.dbsize()),
                    commands=int(info["total_commands_processed"]),
                )
            )
        return out

    def used_memory_and_keys(self) -> tuple[int, int]:
        """``used_memory`` and keys, summed over the primaries for a cluster."""
        nodes = self.nodes()
        return sum(n.used_memory for n in nodes), sum(n.keys for n in nodes)

    def describe(self) -> dict[str, Any]:
        """The server's version; for a cluster, its primaries and replicas too."""
        if not self.cluster:
            return {"version": self._client.info("server")["redis_version"]}
        primaries = self.primaries()
        return {
            "version": primaries[0][1].info("server")["redis_version"],
            "primaries": [name for name, _ in primaries],
            "replicas": sum(
                int(node.info("replication")["connected_slaves"]) for _, node in primaries
            ),
        }

    def close(self) -> None:
        (self._cluster_client or self._client).close()
