"""The Redis engine: redis-py (with hiredis when installed), configured the way the seed describes.

``FRESHCACHE_REDIS`` is a URL (``redis://``, ``rediss://``, ``unix://``) or a dict of client
arguments (``host``, ``port``, ``db``, ``password``, ``socket_timeout``, ``unix_socket_path``...);
``FRESHCACHE_SENTINEL`` selects the primary through Sentinel; ``FRESHCACHE_CLIENT_CLASS`` swaps
the client class. Every composite operation is one non-transactional pipeline: the stamp protocol
needs ordering within a round trip, not atomicity, which is also what keeps it cluster-friendly.

Under Sentinel every new connection asks the server for its run id and role (:class:`PrimaryWatch`):
a connection to a server that is not the primary is refused, and a different run id than before
(a failover, or a restart) changes :meth:`RedisBackend.generation`, which makes the store treat
everything cached before as invalid (docs/scaling-out.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis
from django.utils.module_loading import import_string

from freshcache.backends.base import Backend, Fill, options, wrap_errors
from freshcache.backends.pinned import PinnedConnections, send_unanswered
from freshcache.backends.scripts import DELETE_AND_FILL, DELETE_AND_GET, RELEASE, SEED
from freshcache.exceptions import ImproperlyConfigured

__all__ = ["PrimaryWatch", "RedisBackend", "make_client"]

_errors = wrap_errors(redis.RedisError, OSError)
logger = logging.getLogger("freshcache")

#: How long a release signal stays readable for late waiters.
SIGNAL_TTL_MS = 10_000
#: Past this many keys a lookup is a plain MGET (Lua's unpack has a limit).
_SEED_MAX_KEYS = 1000
_SKIP = ("CLIENT", "REPLY", "SKIP")


def client_class(dotted: str | type | None) -> type[redis.Redis]:
    if dotted is None:
        return redis.Redis
    cls = import_string(dotted) if isinstance(dotted, str) else dotted
    if not (isinstance(cls, type) and issubclass(cls, redis.Redis)):
        raise ImproperlyConfigured(
            f"FRESHCACHE_CLIENT_CLASS must name a subclass of redis.Redis, got {dotted!r}"
        )
    return cls


def _default_retry(config: object) -> dict[str, Any]:
    """One immediate retry unless the settings choose: redis-py's default retries with backoff
    for seconds, which a cache in front of a database should not do (it degrades instead)."""
    if isinstance(config, Mapping) and "retry" in config:
        return {}
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"retry": Retry(NoBackoff(), 1)}


def make_client(
    config: str | Mapping[str, Any] | None,
    sentinel: Mapping[str, Any] | None = None,
    client_cls: str | type | None = None,
) -> redis.Redis:
    """Build the client from the settings' shapes; raise ImproperlyConfigured naming the fix."""
    cls = client_class(client_cls)
    if sentinel:
        from redis.sentinel import Sentinel

        conf = options(sentinel)
        try:
            locations = conf.pop("locations")
            service_name = conf.pop("service_name")
        except KeyError as exc:
            raise ImproperlyConfigured(
                f"FRESHCACHE_SENTINEL needs {exc.args[0]!r}, e.g. "
                "{'locations': [('localhost', 26379)], 'service_name': 'mymaster'}"
            ) from None
        sentinel_kwargs = conf.pop("sentinel_kwargs", None)
        socket_timeout = conf.pop("socket_timeout", None)
        manager = Sentinel(
            locations, socket_timeout=socket_timeout, sentinel_kwargs=sentinel_kwargs
        )
        return manager.master_for(
            service_name, redis_class=cls, socket_timeout=socket_timeout, **conf
        )
    if config is None:
        return cls()
    if isinstance(config, str):
        try:
            return cls.from_url(config, **_default_retry(config))
        except ValueError as exc:
            raise ImproperlyConfigured(f"FRESHCACHE_REDIS is not a valid Redis URL: {exc}") from exc
    if isinstance(config, Mapping):
        conf = options(config)
        url = conf.pop("url", None)
        conf = {**_default_retry(conf), **conf}
        return cls.from_url(url, **conf) if url else cls(**conf)
    raise ImproperlyConfigured(
        "FRESHCACHE_REDIS must be a URL string or a dict of redis.Redis arguments, "
        f"not {type(config).__name__}"
    )


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


class PrimaryWatch:
    """The run id of each primary this process connects to, asked as every connection opens.

    A run id is new after a restart, and another server's after a failover: in both cases
    writes the old primary acknowledged (stamp deletions) may be missing. ``latest`` is the run
    id of the primary connected to last; ``ids`` maps ``host:port`` to run ids.
    """

    def __init__(self, require_primary: bool) -> None:
        self.require_primary = require_primary
        self.ids: dict[str, bytes] = {}
        self.latest: bytes | None = None
        self.refused = False
        self._lock = threading.Lock()

    def hook(self, before: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """A ``redis_connect_func`` that runs ``before`` (the client's own hook) then notes."""

        def on_connect(connection: Any) -> None:
            if before is not None:
                before(connection)
            self.note(connection)

        return on_connect

    def note(self, connection: Any) -> None:
        connection.send_command("INFO", "server")
        connection.send_command("ROLE")
        replies: list[Any] = []
        for _ in range(2):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:  # e.g. an ACL that forbids INFO or ROLE
                replies.append(exc)
        if any(isinstance(reply, Exception) for reply in replies):
            if not self.refused:
                self.refused = True
                logger.warning(
                    "freshcache cannot ask Redis for its role and run id (%s): a failover "
                    "will not be detected; allow INFO and ROLE to this user",
                    next(r for r in replies if isinstance(r, Exception)),
                )
            return
        info = _text(replies[0])
        role = _text(replies[1][0])
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        run_id = fields.get("run_id", "").strip().encode()
        address = f"{connection.host}:{connection.port}"
        if role != "master":
            if self.require_primary:
                # Sentinel named a server that is no longer the primary: refuse it, so that the
                # client asks again instead of reading data that may be older than the primary's.
                raise redis.ConnectionError(f"{address} is a {role}, not the primary")
            return
        with self._lock:
            self.ids[address] = run_id
            self.latest = run_id


class RedisBackend(Backend):
    name = "redis"
    #: Misses create missing stamps inside the lookup's round trip (one script, one slot).
    _seeding = True
    #: None until asked: whether CLIENT REPLY SKIP works (a store need not wait for its reply).
    _skip_replies: bool | None = None

    def __init__(self, client: redis.Redis, track_primary: bool = False) -> None:
        self.client = client
        self._release = client.register_script(RELEASE)
        self._seed = client.register_script(SEED)
        # Under Sentinel every command goes through the pool, which retires connections to a
        # demoted primary; a thread's pinned connection would outlive a failover.
        self._pinned = None if track_primary else PinnedConnections(client)
        self._delete_and_get = client.register_script(DELETE_AND_GET)
        self._delete_and_fill = client.register_script(DELETE_AND_FILL)
        self._expire_gt = True  # EXPIRE ... GT needs Redis 7; dropped on the first refusal
        self._watch: PrimaryWatch | None = None
        if track_primary:
            self._watch = PrimaryWatch(require_primary=True)
            kwargs = client.connection_pool.connection_kwargs
            before = kwargs.get("redis_connect_func")
            kwargs["redis_connect_func"] = self._watch.hook(
                before or (lambda connection: connection.on_connect())
            )

    @classmethod
    def from_settings(cls) -> RedisBackend:
        from freshcache.conf import settings

        client = make_client(settings.REDIS, settings.SENTINEL, settings.CLIENT_CLASS)
        return cls(client, track_primary=bool(settings.SENTINEL))

    @_errors
    def generation(self) -> bytes | None:
        """The run id of the Sentinel-managed primary (None for a plain server)."""
        if self._watch is None:
            return None
        if self._watch.latest is None and not self._watch.refused:
            self.client.ping()  # the first connection notes the primary
        return self._watch.latest

    @_errors
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return cast("list[bytes | None]", self.client.mget(keys))

    @_errors
    def get_many_seeding(
        self, keys: Sequence[str], first: int, tokens: Sequence[bytes], ttl: int
    ) -> tuple[list[bytes | None], bool]:
        if not self._seeding or len(keys) > _SEED_MAX_KEYS:
            return self.get_many(keys), False
        try:
            values = self._script(self._seed, SEED, keys, [first + 1, ttl, *tokens])
        except redis.ResponseError as exc:
            self._scripts_refused(exc)
            return self.get_many(keys), False
        return values, True

    def _script(
        self, script: Any, source: str, keys: Sequence[str], args: Sequence[Any]
    ) -> list[bytes | None]:
        """Run one of our scripts on this thread's connection (loading it if the server lost
        it); its reply starts with ``keys[0]``, checked so that a reply that is not this call's
        can never be taken for it."""
        pinned = self._pinned
        if pinned is None:
            reply = script(keys=keys, args=args)
        else:
            command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                reply = pinned.command(*command)
            except redis.exceptions.NoScriptError:
                self.client.script_load(source)
                reply = pinned.command(*command)
        if not reply or reply[0] != keys[0].encode():
            if pinned is not None:
                pinned.drop()
            raise redis.ConnectionError("a script call read a reply that was not its own")
        return cast("list[bytes | None]", reply[1:])

    def _scripts_refused(self, exc: Exception) -> None:
        """Scripts refused (an ACL, a proxy): plain commands from now on, one round trip more
        on a miss."""
        logger.warning("freshcache: Redis refused a script (%s); using plain commands", exc)
        self._seeding = False

    @_errors
    def set_many(
        self,
        mapping: Mapping[str, bytes],
        ttl: int,
        touch: Sequence[str] = (),
        wait: bool = True,
    ) -> None:
        if not wait and self._replies_skippable():
            commands: list[tuple[Any, ...]] = []
            for key, value in mapping.items():
                commands += [_SKIP, ("SET", key, value, "EX", ttl)]
            if self._expire_gt:
                for key in touch:
                    commands += [_SKIP, ("EXPIRE", key, ttl, "GT")]
            if self._pinned is not None:
                self._pinned.send_only(commands)
            else:
                self._send_only(commands)
            return
        pipe = self.client.pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(key, value, ex=ttl)
        if self._expire_gt:
            # Redis < 7 has no GT; without it stamps are never extended, so one may expire
            # before a value that uses it, which only costs a miss.
            for key in touch:
                pipe.expire(key, ttl, gt=True)
        try:
            pipe.execute()
        except redis.ResponseError as exc:
            message = str(exc).lower()
            refused = "syntax" in message or "wrong number of arguments" in message
            if not self._expire_gt or not refused:
                raise
            self._expire_gt = False

    @_errors
    def prepare(
        self,
        nx: Mapping[str, bytes],
        appends: Sequence[tuple[str, bytes]],
        overwrite: Mapping[str, bytes],
        ttl: int,
        keys: Sequence[str],
    ) -> list[bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for key, value in nx.items():
            pipe.set(key, value, ex=ttl, nx=True)
        for key, value in appends:
            pipe.append(key, value)
        for key, value in overwrite.items():
            pipe.set(key, value, ex=ttl)
        self._queue_reads(pipe, keys)
        return self._read_replies(pipe.execute(), keys)

    def _replies_skippable(self) -> bool:
        """Whether the server honours ``CLIENT REPLY SKIP`` (asked once, on first use)."""
        if self._skip_replies is None:
            connection = self._connection()
            try:
                # The first PING goes unanswered if SKIP works; else CLIENT's error comes first.
                ping = ("PING",)
                connection.send_packed_command(connection.pack_commands([_SKIP, ping, ping]))
                try:
                    reply = connection.read_response()
                except redis.ResponseError:
                    self._skip_replies = False
                    connection.disconnect()  # the PINGs' replies are still on their way
                else:
                    self._skip_replies = reply in (b"PONG", "PONG", True)
                    if not self._skip_replies:
                        connection.disconnect()
            except BaseException:
                connection.disconnect()
                raise
            finally:
                self.client.connection_pool.release(connection)
        return self._skip_replies

    def _send_only(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """Unanswered writes on a pooled connection, handed straight back (the pool gives a
        thread back the connection it released last, so its next command queues behind)."""
        connection = self._connection()
        try:
            send_unanswered(connection, commands)
        finally:
            self.client.connection_pool.release(connection)

    def _connection(self) -> Any:
        pool = self.client.connection_pool
        try:
            return pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            return pool.get_connection("SET")

    def _queue_reads(self, pipe: Any, keys: Sequence[str]) -> None:
        """Queue the read that ends ``prepare``: one MGET (a cluster reads key by key)."""
        pipe.mget(keys)

    def _read_replies(self, replies: list[Any], keys: Sequence[str]) -> list[bytes | None]:
        return cast("list[bytes | None]", replies[-1])

    @property
    def fills(self) -> bool:  # type: ignore[override]
        return self._seeding

    @_errors
    def delete_and_get(
        self, delete: Sequence[str], keys: Sequence[str], fills: Sequence[Fill] = ()
    ) -> list[bytes | None]:
        if fills and delete and self._seeding and len(delete) + len(keys) <= _SEED_MAX_KEYS:
            args: list[Any] = [len(delete), len(fills)]
            extra: list[str] = []
            for fill in fills:
                extra.extend((*fill.check, fill.key))
                args.extend((*fill.expect, fill.token, fill.payload, fill.ttl, fill.stamp_ttl))
            try:
                return self._script(self._delete_and_fill, DELETE_AND_FILL,
                                    [*delete, *keys, *extra], args)  # fmt: skip
            except redis.ResponseError as exc:
                self._scripts_refused(exc)
        if not keys:
            if delete:
                self.client.delete(*delete)
            return []
        if not delete:
            return cast("list[bytes | None]", self.client.mget(keys))
        if self._seeding and len(delete) + len(keys) <= _SEED_MAX_KEYS:
            try:
                return self._script(self._delete_and_get, DELETE_AND_GET, [*delete, *keys],
                                    [len(delete)])  # fmt: skip
            except redis.ResponseError as exc:
                self._scripts_refused(exc)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(*delete)
        pipe.mget(keys)
        return cast("list[bytes | None]", pipe.execute()[-1])

    @_errors
    def lock_acquire(self, key: str, token: bytes, ttl_ms: int) -> tuple[bool, bytes | None, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, token, nx=True, px=ttl_ms)
        pipe.get(key)
        pipe.pttl(key)
        acquired, holder, left = pipe.execute()
        return bool(acquired), holder, max(int(left), 0)

    @_errors
    def lock_wait(self, key: str, holder: bytes, timeout: float) -> bool:
        signal = f"{key}:{holder.decode()}"
        limit = self._socket_timeout()
        if limit:
            # Block well inside the socket timeout: Redis checks blocking timeouts only every
            # 100 ms, and a reply after the socket gave up would be an error.
            timeout = min(timeout, float(limit) / 2)
        if timeout < 0.05:
            return False
        # A wait on a one-element list that every waiter pops and pushes back, so a single
        # release wakes them all (and late arrivals find it until it expires).
        try:
            return self.client.brpoplpush(signal, signal, timeout) is not None
        except redis.TimeoutError:
            return False  # waiting ran out: the caller looks again or computes itself

    def _socket_timeout(self) -> float | None:
        timeout = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        return cast("float | None", timeout)

    @_errors
    def lock_release(self, key: str, token: bytes) -> None:
        self._release(keys=[key, f"{key}:{token.decode()}"], args=[token, SIGNAL_TTL_MS])

    @_errors
    def publish(self, channel: str, message: bytes) -> None:
        self.client.publish(channel, message)

    @_errors
    def ping(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"redis:{where}/{kwargs.get('db', 0)}"
