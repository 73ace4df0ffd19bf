"""The stamp protocol: how a value is stored with the stamps of what it read, and invalidated.

Keys under the prefix ``P``:

* ``Pg`` — the global epoch; every value depends on it, so deleting it is ``invalidate_all``.
* ``Pr:<table>`` — the table's registry: ``@<epoch>;<scheme>;<scheme>;...`` where a scheme is
  the comma-joined column names of a conjunction readers use. Every value that read the table
  stores the epoch, so losing the registry (eviction, flush, failover, ``invalidate_model``)
  invalidates every value of the table: a writer that finds none skips the granular stamps
  and publishes the registry's loss to ``local_get`` copies, as does the reader that makes a
  new one (whose schemes may be fewer, so later writers would miss those copies' stamps).
* ``Ps:<table>[:<cols>:<digest>]`` — stamps: random tokens, one per conjunction of equalities.
* values — ``[tokens, data]``, where tokens are the current values of the keys above, in the
  order the reader computed them.

When the backend has a *generation* (Sentinel, Cluster: the run ids of the primaries), ``Pg`` holds
``<token>|<generation>``, and an epoch written under another generation reads as missing: after a
failover or a restart, which can lose acknowledged deletions, everything cached before is invalid.

Read: one MGET of the value and all its stamp keys; valid iff every token matches. Miss: make
sure the registry lists the schemes and the stamps exist (created by the lookup itself where the
engine can, else ``SET NX``), then read them, *before* the computation, and store the value with
the tokens read (without waiting for the reply when no one waits on a lock for it). A writer
deletes, after its commit, the stamps its row's old and new values match, and reads the registry
in the same round trip to catch schemes registered since it looked. Any interleaving leaves a
value whose tokens no longer match, so it is never served; no check-and-set is needed (the
scripts an engine may use only save round trips), except by the optional write-through of a
saved row (:mod:`freshcache.writethrough`), which the engines without one skip.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgpack

from freshcache.backends import get_backend
from freshcache.backends.base import Backend, Fill
from freshcache.conf import key_prefix, on_reset, prefix_varies, settings
from freshcache.dependencies import Deps
from freshcache.dynamic import DynamicValues
from freshcache.exceptions import BackendError, PayloadError, SerializationError
from freshcache.local import publish
from freshcache.locks import DogPileLocks
from freshcache.resilience import GEN_SEP, Resilience
from freshcache.stamps import (
    SCHEME_SEP,
    new_token,
    parse_registry,
    rows_stamp_keys,
    scheme,
    scheme_text,
    stamp_key,
)

__all__ = ["STAMP_MARGIN", "Plan", "Probe", "Store", "TableChange", "store"]

logger = logging.getLogger("freshcache")
T = TypeVar("T")

#: Stamps outlive the values that use them by this many seconds.
STAMP_MARGIN = 60


@dataclass(frozen=True)
class Plan:
    """The keys a value depends on, computed once from its dependencies.

    ``keys`` is ``[global, registry..., stamps...]``; ``schemes[i]`` lists the schemes that
    registry ``i`` must contain.
    """

    keys: tuple[str, ...]
    registries: tuple[str, ...]
    schemes: tuple[frozenset[str], ...]
    tables: tuple[str, ...]

    @classmethod
    def build(cls, deps: Deps, prefix: str) -> Plan:
        tables = tuple(sorted(deps))
        registries = tuple(f"{prefix}r:{table}" for table in tables)
        stamps: list[str] = []
        schemes: list[frozenset[str]] = []
        for table in tables:
            conjs = deps[table]
            needed = set()
            for conj in sorted(conjs, key=repr):
                cols = scheme(conj)
                if any("," in c or ";" in c for c in cols):
                    conj = ()  # a column name we cannot encode: depend on the whole table
                    cols = ()
                if cols:
                    needed.add(scheme_text(cols))
                stamps.append(stamp_key(prefix, table, conj))
            schemes.append(frozenset(needed))
        # The same stamp can come from two tables' conjunctions only if it is the same key.
        unique_stamps = tuple(dict.fromkeys(stamps))
        keys = (f"{prefix}g", *registries, *unique_stamps)
        return cls(keys=keys, registries=registries, schemes=tuple(schemes), tables=tables)

    def current(self, db: str) -> bool:
        """Whether a callable ``FRESHCACHE_PREFIX`` still gives this plan's prefix on ``db``."""
        return not prefix_varies() or self.keys[0] == f"{key_prefix(db, self.tables)}g"


@dataclass
class Probe:
    """What one read round trip found: the stored payload and the current stamp values."""

    key: str
    plan: Plan
    current: list[bytes | None]
    data: bytes | None = None
    #: The global epoch exists but was written under another backend generation.
    stale_global: bool = False
    #: The lookup already made the keys live as long as a value stored now (no touch needed).
    touched: bool = False

    @property
    def hit(self) -> bool:
        return self.data is not None


@dataclass
class TableChange:
    """A write to one table: the rows it touched (old and new versions) or the whole table.

    ``rows`` map column names to normalized values; ``columns`` lists the columns every row
    carries (the pre-read chose them from ``schemes``). ``schemes`` is what the writer believed
    the registry held when it chose those columns.
    """

    table: str
    rows: Sequence[Mapping[str, Hashable]] = field(default_factory=list)
    columns: frozenset[str] = frozenset()
    whole_table: bool = False
    #: The row's new ``get(pk=)`` entry, stored if nothing invalidated it since its load.
    fill: Fill | None = None


class Store(Resilience, DynamicValues, DogPileLocks):
    """The protocol on top of a backend, with degrade-on-failure handled in one place."""

    def __init__(self, backend: Callable[[], Backend] = get_backend) -> None:
        self._backend = backend
        self._schemes: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0
        # Invalidations that could not be delivered: registry/global keys to delete on recovery.
        self._missed: set[str] = set()
        # The backend generation last seen, and coarse keys invalidated lately (redelivered).
        self._generation: bytes | None = None
        self._journal: OrderedDict[str, None] = OrderedDict()

    # -- read path --------------------------------------------------------------------------------

    def lookup(self, key: str, plan: Plan, ttl: int | None = None) -> Probe | None:
        """One round trip: the payload and the current stamps. None when the backend failed.

        With ``ttl`` (a value that will be stored on a miss), missing stamps are created in the
        same round trip where the engine can, so the miss's ``prepare`` usually needs none.
        """
        if (self._missed or self._down) and not self._recover():
            return None
        try:
            keys = (key, *plan.keys)
            touched = False
            if ttl is None:
                values = self.backend.get_many(keys)
            else:
                first = 2 + len(plan.registries)
                base = new_token()
                seeds = [b"%s.%d" % (base, i) for i in range(len(keys) - first)]
                values, touched = self.backend.get_many_seeding(
                    keys, first, seeds, ttl + STAMP_MARGIN
                )
            screened = self._screen(values[1:], global_first=True)
        except BackendError as exc:
            self._failed(exc)
            return None
        if screened is None:
            return None
        probe = Probe(key=key, plan=plan, current=screened[0], stale_global=screened[1])
        probe.touched = touched
        self._remember_schemes(plan, probe.current)
        raw = values[0]
        if raw is not None:
            tokens = self._tokens(plan, probe.current)
            if tokens is not None:
                try:
                    stored_tokens, data = msgpack.unpackb(raw, use_list=True)
                except Exception:  # garbage in the backend is a miss, never an error
                    logger.warning("freshcache: undecodable payload at %s treated as a miss", key)
                else:
                    if stored_tokens == tokens:
                        probe.data = data
        return probe

    def prepare(self, probe: Probe, ttl: int) -> list[bytes] | None:
        """Make sure schemes and stamps exist and read them; the tokens to store, or None.

        Skips the round trip when the probe already saw everything in place, which is the
        common miss (the value expired or was never stored, the stamps live on).
        """
        plan = probe.plan
        tokens = self._tokens(plan, probe.current)
        if tokens is not None and self._registered(plan, probe.current):
            return tokens
        nx: dict[str, bytes] = {}
        appends: list[tuple[str, bytes]] = []
        overwrite: dict[str, bytes] = {}
        if probe.current[0] is None:
            # An epoch of another generation is replaced; a missing one is created only once.
            epoch = new_token()
            if self._generation is not None:
                epoch += GEN_SEP + self._generation
            (overwrite if probe.stale_global else nx)[plan.keys[0]] = epoch
        recreated: list[str] = []
        for i, registry in enumerate(plan.registries):
            raw = probe.current[1 + i]
            parsed = parse_registry(raw)
            wanted = plan.schemes[i]
            if parsed is None:
                recreated.append(registry)
                entry = b"@" + new_token() + SCHEME_SEP
                entry += b"".join(s.encode() + SCHEME_SEP for s in sorted(wanted))
                if raw is None:
                    nx[registry] = entry
                    # If another process created it first, our schemes still get in.
                    appends.extend((registry, s.encode() + SCHEME_SEP) for s in sorted(wanted))
                else:
                    overwrite[registry] = entry
            else:
                missing = wanted - parsed[1]
                appends.extend((registry, s.encode() + SCHEME_SEP) for s in sorted(missing))
        first_stamp = 1 + len(plan.registries)
        for key, value in zip(plan.keys[first_stamp:], probe.current[first_stamp:], strict=True):
            if value is None:
                nx[key] = new_token()
        try:
            current = self.backend.prepare(nx, appends, overwrite, ttl + STAMP_MARGIN, plan.keys)
            screened = self._screen(current, global_first=True)
        except BackendError as exc:
            self._failed(exc)
            return None
        if recreated:
            # Copies in process memory were validated against the lost registry, and writers
            # now go by the new one, which may lack their schemes: drop them everywhere.
            try:
                publish(self.backend, recreated)
            except BackendError as exc:
                self._failed(exc, missed=recreated)
                return None
        if screened is None:
            return None
        current = screened[0]
        self._remember_schemes(plan, current)
        if not self._registered(plan, current):
            return None
        return self._tokens(plan, current)

    def save(
        self,
        key: str,
        tokens: list[bytes],
        data: bytes,
        ttl: int,
        plan: Plan,
        wait: bool = True,
        touch: bool = True,
    ) -> bool:
        """Store ``data`` with the tokens read by :meth:`prepare`; False when not stored.

        ``wait=False``: do not wait for the server's reply (the caller holds no lock that others
        wait on): a lost write is a later miss, and the tokens keep it from ever being wrong.
        """
        payload = msgpack.packb([tokens, data], use_bin_type=True)
        if len(payload) > settings.MAX_VALUE_SIZE:
            logger.debug("freshcache: %s not cached, %d bytes is over the limit", key, len(payload))
            return False
        try:
            self.backend.set_many({key: payload}, ttl, touch=plan.keys if touch else (), wait=wait)
        except BackendError as exc:
            self._failed(exc)
            return False
        return True

    def get_or_compute(
        self,
        key: str,
        plan: Plan,
        compute: Callable[[], T],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        ttl: int,
    ) -> tuple[T, bool]:
        """The value and whether it came from the cache; computing it on a miss."""
        probe = self.lookup(key, plan)
        if probe is not None and probe.data is not None:
            try:
                return decode(probe.data), True
            except PayloadError as exc:
                logger.warning("freshcache: payload at %s rejected (%s), recomputing", key, exc)
        tokens = self.prepare(probe, ttl) if probe is not None else None
        value = compute()
        if tokens is not None:
            try:
                data = encode(value)
            except SerializationError as exc:
                logger.debug("freshcache: %s not cached: %s", key, exc)
            else:
                self.save(key, tokens, data, ttl, plan)
        return value, False

    def read_stamps(self, plan: Plan, ttl: int) -> list[bytes] | None:
        """Ensure and read a plan's stamps without a value (a read recorded by a capture)."""
        if (self._missed or self._down) and not self._recover():
            return None
        try:
            screened = self._screen(self.backend.get_many(plan.keys), global_first=True)
        except BackendError as exc:
            self._failed(exc)
            return None
        if screened is None:
            return None
        probe = Probe(key="", plan=plan, current=screened[0], stale_global=screened[1])
        self._remember_schemes(plan, probe.current)
        return self.prepare(probe, ttl)

    def tokens_of(self, probe: Probe) -> list[bytes] | None:
        """The tokens a probe saw (those a hit was validated against)."""
        return self._tokens(probe.plan, probe.current)

    def delete(self, keys: Sequence[str]) -> None:
        try:
            self.backend.delete_many(keys)
        except BackendError as exc:
            self._failed(exc)

    # -- write path -------------------------------------------------------------------------------

    def known_schemes(self, prefix: str, table: str) -> frozenset[str] | None:
        """The schemes this process last saw for ``table``; reads the registry if it never did.

        None when the backend is unreachable: the caller then invalidates the whole table.
        """
        registry = f"{prefix}r:{table}"
        known = self._schemes.get(registry)
        if known is not None:
            return known
        try:
            (raw,) = self.backend.get_many((registry,))
        except BackendError as exc:
            self._failed(exc)
            return None
        parsed = parse_registry(raw)
        schemes = parsed[1] if parsed else frozenset()
        self._schemes[registry] = schemes
        return schemes

    def invalidate(self, changes: Sequence[TableChange], prefix: str) -> None:
        """Delete every stamp the changes match; one round trip unless schemes appeared."""
        if not changes:
            return
        delete: list[str] = []
        check: dict[str, TableChange] = {}
        handled: dict[str, frozenset[str]] = {}
        for change in changes:
            registry = f"{prefix}r:{change.table}"
            delete.append(stamp_key(prefix, change.table, ()))
            if change.whole_table:
                delete.append(registry)
                continue
            schemes = self._schemes.get(registry, frozenset())
            keys, complete = rows_stamp_keys(
                prefix, change.table, change.rows, schemes, change.columns
            )
            delete.extend(keys)
            if not complete:
                delete.append(registry)
                continue
            check[registry] = change
            handled[registry] = handled.get(registry, frozenset()) | schemes
        registries = list(check)
        self._journal_add(f"{prefix}r:{c.table}" for c in changes)
        with self._lock:
            missed = list(self._missed)  # a writer-only process delivers what it missed here
        try:
            fills = [c.fill for c in changes if c.fill is not None]
            current = self.backend.delete_and_get(
                list(dict.fromkeys(delete + missed)), registries, fills
            )
            self._screen(())  # on a new primary, this delivers the journal too
        except BackendError as exc:
            self._failed(exc, missed=[f"{prefix}r:{c.table}" for c in changes])
            return
        try:
            publish(self.backend, [*delete, *missed])
        except BackendError as exc:
            self._failed(exc, missed=[f"{prefix}r:{c.table}" for c in changes])
        if missed:
            with self._lock:
                self._missed.difference_update(missed)
        more: list[str] = []
        gone: list[str] = []
        for registry, raw in zip(registries, current, strict=True):
            parsed = parse_registry(raw)
            if parsed is None:
                self._schemes.pop(registry, None)  # values in Redis are invalid already
                gone.append(registry)
                continue
            self._schemes[registry] = parsed[1]
            new = parsed[1] - handled[registry]
            if new:
                change = check[registry]
                keys, complete = rows_stamp_keys(
                    prefix, change.table, change.rows, new, change.columns
                )
                more.extend(keys)
                if not complete:
                    more.append(registry)
        if more:
            try:
                self.backend.delete_many(more)
            except BackendError as exc:
                self._failed(exc, missed=registries)
                return
        if more or gone:
            try:
                publish(self.backend, [*more, *gone])
            except BackendError as exc:
                self._failed(exc, missed=registries)

    def invalidate_tables(self, tables: Iterable[str], prefix: str) -> None:
        self.invalidate([TableChange(table=t, whole_table=True) for t in tables], prefix)

    def invalidate_all(self, prefix: str) -> None:
        key = f"{prefix}g"
        self._journal_add([key])
        try:
            self.backend.delete_many([key])
            publish(self.backend, [key])
        except BackendError as exc:
            self._failed(exc, missed=[key])

    # -- helpers ----------------------------------------------------------------------------------

    def _tokens(self, plan: Plan, current: Sequence[bytes | None]) -> list[bytes] | None:
        """The tokens a value stored now would carry, or None if any is missing."""
        n_reg = len(plan.registries)
        tokens: list[bytes] = []
        for i, value in enumerate(current):
            if value is None:
                return None
            if 1 <= i <= n_reg:
                parsed = parse_registry(value)
                if parsed is None:
                    return None
                tokens.append(parsed[0])
            else:
                tokens.append(value)
        return tokens

    def _registered(self, plan: Plan, current: Sequence[bytes | None]) -> bool:
        for i, wanted in enumerate(plan.schemes):
            parsed = parse_registry(current[1 + i])
            if parsed is None or not wanted <= parsed[1]:
                return False
        return True

    def _remember_schemes(self, plan: Plan, current: Sequence[bytes | None]) -> None:
        for i, registry in enumerate(plan.registries):
            parsed = parse_registry(current[1 + i])
            if parsed is not None:
                self._schemes[registry] = parsed[1]

    def forget(self) -> None:
        """Drop process-local knowledge of schemes and of an outage (settings changed).

        Missed invalidations are kept: dropping them could serve stale data.
        """
        self._schemes.clear()
        with self._lock:
            self._down = False
            self._generation = None


store = Store()


@on_reset
def reset_store() -> None:
    store.forget()
