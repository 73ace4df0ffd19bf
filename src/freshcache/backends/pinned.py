"""One Redis connection per thread for the hot path: lookups and stores.

redis-py's client takes a connection from its pool and gives it back around every command,
which on a cache hit costs about as much as our own work (pool bookkeeping, a readiness
``select()``, observability hooks). The read path sends one command per hit, so it keeps the
connection it took, one per thread, and talks to it directly.

Two properties follow, and the store relies on both:

* a thread's lookups and stores share one socket, so a store sent without waiting for its reply
  (``CLIENT REPLY SKIP``) is always processed before that thread's next lookup;
* the connection goes back to the pool when its thread ends (a finalizer on the thread's
  holder), and a forked child takes a new one, so nothing leaks with thread-per-request servers.

Errors are redis-py's: a broken connection is dropped and the command tried once more on a new
one (what the client's default retry does); anything else reaches the caller.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis

__all__ = ["PinnedConnections", "send_unanswered"]

_RETRYABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def send_unanswered(connection: Any, commands: Sequence[tuple[Any, ...]]) -> None:
    """Write commands the server will not answer; a connection the write broke is closed, so
    that no half-sent command is ever followed by another."""
    try:
        connection.send_packed_command(connection.pack_commands(commands))
    except BaseException:
        connection.disconnect()
        raise


class _Holder:
    """Owns a thread's connection; its finalizer hands the connection back to the pool."""

    def __init__(self, connection: Any, pid: int) -> None:
        self.connection = connection
        self.pid = pid


def _give_back(pool: Any, connection: Any, pid: int) -> None:
    if os.getpid() == pid:  # a forked child must not touch its parent's socket
        pool.release(connection)


class PinnedConnections:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._local = threading.local()

    def _connection(self) -> Any:
        holder: _Holder | None = getattr(self._local, "holder", None)
        pid = os.getpid()
        if holder is None or holder.pid != pid:
            pool = self.client.connection_pool
            try:
                connection = pool.get_connection()
            except TypeError:  # redis-py before 5.3 wants a command name
                connection = pool.get_connection("MGET")
            holder = _Holder(connection, pid)
            weakref.finalize(holder, _give_back, pool, connection, pid)
            self._local.holder = holder
        return holder.connection

    def command(self, *args: Any) -> Any:
        """Send one command and read its reply; once more on a new connection if it broke."""
        try:
            return self._once(args)
        except _RETRYABLE:
            return self._once(args)

    def _once(self, args: tuple[Any, ...]) -> Any:
        connection = self._connection()
        try:
            connection.send_packed_command(connection.pack_command(*args))
            return connection.read_response()
        except redis.ResponseError:
            raise  # an error reply was read: the connection is in step
        except BaseException:
            # Whatever interrupted us (a timeout, a signal) may leave a reply unread: a later
            # command must never read it as its own.
            connection.disconnect()
            raise

    def send_only(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """Write commands the server will not answer (each behind ``CLIENT REPLY SKIP``)."""
        send_unanswered(self._connection(), commands)

    def drop(self) -> None:
        """Close this thread's connection (it may hold an unread reply) and forget it: the next
        command takes a new one."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None:
            holder.connection.disconnect()
        self._local.holder = None
