"""The contract every storage engine fulfils, kept to what the stamp protocol needs.

A backend stores opaque bytes under string keys with a TTL. Each method is one network round trip
on a remote engine, which is why the miss path and the invalidation path are single composite
calls (``prepare``, ``delete_and_get``) rather than sequences of small ones. Errors of the
underlying client are converted to :class:`~freshcache.exceptions.BackendError` by
:func:`wrap_errors`, the one place where that happens; whether the error reaches the user is
decided by the store (``FRESHCACHE_DEGRADE_ON_FAILURE``), not here.

The async twins default to running the sync method in a worker thread; an engine with a native
async client may override them.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async

from freshcache.exceptions import BackendError

__all__ = ["Backend", "Fill", "wrap_errors"]

P = ParamSpec("P")
R = TypeVar("R")


def wrap_errors(
    *error_types: type[BaseException],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn the client's exceptions into BackendError, keeping the original as ``__cause__``."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except BackendError:
                raise
            except error_types as exc:
                raise BackendError(f"{func.__qualname__} failed: {exc}") from exc

        return wrapper

    return decorate


@dataclass(frozen=True)
class Fill:
    """A value an invalidation stores in its own step, if ``check`` (a plan's global epoch,
    registry and stamp keys) still hold ``expect`` (the global token, the registry's epoch,
    the stamp's token): the stamp then gets ``token`` (for ``stamp_ttl`` seconds) and ``key``
    the ``payload`` (for ``ttl``). See :mod:`freshcache.writethrough`."""

    key: str
    check: tuple[str, str, str]
    expect: tuple[bytes, ...]
    token: bytes
    payload: bytes
    ttl: int
    stamp_ttl: int


class Backend(abc.ABC):
    """Storage for values, stamps and scheme registries.

    Semantics every engine must give (the contract tests in ``tests/test_backends.py`` check
    them on each engine):

    * a key past its TTL reads as missing;
    * ``prepare`` runs its writes in order and then reads, so the read sees them;
    * ``append`` on a missing key creates it without a TTL, as Redis does.
    """

    name: str = "base"
    #: Whether ``delete_and_get`` stores ``fills`` (else it ignores them).
    fills: bool = False

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in order, None for missing ones (one round trip)."""

    @abc.abstractmethod
    def set_many(
        self,
        mapping: Mapping[str, bytes],
        ttl: int,
        touch: Sequence[str] = (),
        wait: bool = True,
    ) -> None:
        """Store values with a TTL (seconds); extend ``touch`` keys' TTL to at least ``ttl``.

        ``wait=False`` lets an engine send the writes without waiting for the reply (a value
        that never arrives is a later miss, never a wrong answer); the writes still reach the
        server before any later command this thread sends on the same connection.
        """

    def get_many_seeding(
        self, keys: Sequence[str], first: int, tokens: Sequence[bytes], ttl: int
    ) -> tuple[list[bytes | None], bool]:
        """``get_many``, and in the same round trip: each of ``keys[first:]`` that is missing
        is created with its token (``tokens[i - first]``) and read as such, and when
        ``keys[0]`` is missing the others that exist live at least ``ttl`` seconds more.

        A miss then finds its stamps in place before it reads the database, which saves
        ``prepare`` its round trip, and its store need not extend them. The flag says whether
        the engine did so (the default just reads).
        """
        return self.get_many(keys), False

    @abc.abstractmethod
    def prepare(
        self,
        nx: Mapping[str, bytes],
        appends: Sequence[tuple[str, bytes]],
        overwrite: Mapping[str, bytes],
        ttl: int,
        keys: Sequence[str],
    ) -> list[bytes | None]:
        """SET NX (with ``ttl``) each of ``nx``, APPEND each of ``appends``, SET ``overwrite``
        (with ``ttl``), then read ``keys``: one round trip."""

    @abc.abstractmethod
    def delete_and_get(
        self, delete: Sequence[str], keys: Sequence[str], fills: Sequence[Fill] = ()
    ) -> list[bytes | None]:
        """Delete ``delete`` then read ``keys`` (one round trip); an engine with ``fills``
        stores each fill whose check holds, checked before the deletion, in the same atomic
        step."""

    def delete_many(self, keys: Sequence[str]) -> None:
        self.delete_and_get(keys, ())

    # -- the dog-pile lock: one computes, the others block until it signals --------------------
    #
    # ``key`` and its signal share a hash tag, so that the one script touching both stays in
    # one slot of a cluster.

    @abc.abstractmethod
    def lock_acquire(self, key: str, token: bytes, ttl_ms: int) -> tuple[bool, bytes | None, int]:
        """Take ``key`` for ``ttl_ms`` unless held: (acquired, holder's token, its ms left)."""

    @abc.abstractmethod
    def lock_wait(self, key: str, holder: bytes, timeout: float) -> bool:
        """Block (no polling) until ``holder`` releases ``key`` or ``timeout`` seconds pass."""

    @abc.abstractmethod
    def lock_release(self, key: str, token: bytes) -> None:
        """Wake every waiter of this holder, and delete ``key`` if ``token`` still holds it."""

    def publish(self, channel: str, message: bytes) -> None:  # noqa: B027 - optional
        """Broadcast to other processes (``local_get``); a single-process engine needs none."""

    def generation(self) -> bytes | None:
        """A token naming the server(s) that hold the data, or None when it cannot change.

        It changes when writes the engine acknowledged may have been lost: a replica promoted
        by a failover (replication is asynchronous), a primary restarted. The store then treats
        every value cached before as invalid. Called before values are served, so it must be
        cheap: engines note the token as connections open rather than asking each time.
        """
        return None

    @abc.abstractmethod
    def ping(self) -> bool:
        """True when the engine answers; raises BackendError when it does not."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the backend may be used again afterwards."""

    # -- async twins ------------------------------------------------------------------------------

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await sync_to_async(self.get_many, thread_sensitive=False)(keys)

    async def aset_many(
        self, mapping: Mapping[str, bytes], ttl: int, touch: Sequence[str] = ()
    ) -> None:
        await sync_to_async(self.set_many, thread_sensitive=False)(mapping, ttl, touch)

    async def aprepare(
        self,
        nx: Mapping[str, bytes],
        appends: Sequence[tuple[str, bytes]],
        overwrite: Mapping[str, bytes],
        ttl: int,
        keys: Sequence[str],
    ) -> list[bytes | None]:
        return await sync_to_async(self.prepare, thread_sensitive=False)(
            nx, appends, overwrite, ttl, keys
        )

    async def adelete_and_get(
        self, delete: Sequence[str], keys: Sequence[str]
    ) -> list[bytes | None]:
        return await sync_to_async(self.delete_and_get, thread_sensitive=False)(delete, keys)

    async def adelete_many(self, keys: Sequence[str]) -> None:
        await sync_to_async(self.delete_many, thread_sensitive=False)(keys)

    async def aping(self) -> bool:
        return await sync_to_async(self.ping, thread_sensitive=False)()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def describe(self) -> str:
        return self.name


def options(config: Any) -> dict[str, Any]:
    """A copy of a dict-shaped setting, so engines never mutate the user's settings."""
    return dict(config) if isinstance(config, Mapping) else {}
