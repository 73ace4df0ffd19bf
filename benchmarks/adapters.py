"""The few things that differ between libraries, behind one small interface.

Everything else in the workload is plain ORM code that runs unchanged under every library:
each caches the benchmark models' reads by itself once configured (see ``benchmarks/settings``).
What differs is how to invalidate a model by hand, how to compute a query's cache key alone
(only through each library's internals: none of the three documents it), and how its Redis
payloads decode (for the raw-``MGET`` floor).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import Model, QuerySet

__all__ = ["Adapter", "NotAvailable", "QueryCounter", "adapter_for"]


class QueryCounter:
    """A ``connection.execute_wrapper`` that counts the statements sent to the database.

    A read during which it counted nothing was served by the cache, whatever the library.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


class NotAvailable(Exception):
    """The library has no equivalent of the operation; the report says n/a."""


class Adapter:
    """The plain-Django baseline: nothing to invalidate, no keys, no payloads."""

    #: False for the baseline: operations that only make sense with a cache are skipped.
    caches: bool = False
    #: Which function the cache-key figure times, for the report's footnote.
    key_api: str | None = None

    def invalidate_model(self, model: type[Model]) -> None:
        raise NotAvailable

    def cache_key(self, qs: QuerySet[Any]) -> object:
        raise NotAvailable

    def decode_floor(self, values: Sequence[bytes | None]) -> object:
        raise NotAvailable


class Cacheops(Adapter):
    caches = True
    key_api = "QuerySet._cache_key() + dnfs(qs) (private)"

    def invalidate_model(self, model: type[Model]) -> None:
        from cacheops import invalidate_model

        invalidate_model(model)

    def cache_key(self, qs: QuerySet[Any]) -> object:
        # What a hit computes before its round trip: the key, and the conjunctions it passes along.
        from cacheops.tree import dnfs

        return qs._cache_key(), dnfs(qs)

    def decode_floor(self, values: Sequence[bytes | None]) -> object:
        return [pickle.loads(v) for v in values if v is not None]


class Cachalot(Adapter):
    caches = True
    key_api = "cachalot.utils.get_query_cache_key() + _get_table_cache_keys() (private)"

    def invalidate_model(self, model: type[Model]) -> None:
        from cachalot.api import invalidate

        invalidate(model)

    def cache_key(self, qs: QuerySet[Any]) -> object:
        from cachalot.utils import _get_table_cache_keys, get_query_cache_key

        compiler = qs.query.get_compiler(qs.db)
        return get_query_cache_key(compiler), _get_table_cache_keys(compiler)

    def decode_floor(self, values: Sequence[bytes | None]) -> object:
        # Django's RedisSerializer: ints as their digits, everything else pickled.
        out = []
        for v in values:
            if v is None:
                continue
            try:
                out.append(int(v))
            except ValueError:
                out.append(pickle.loads(v))
        return out


class Freshcache(Adapter):
    caches = True
    key_api = "as_sql + _plan_and_key (internal; the walk and hashing are remembered by statement)"

    def invalidate_model(self, model: type[Model]) -> None:
        from freshcache import invalidate_model

        invalidate_model(model)

    def cache_key(self, qs: QuerySet[Any]) -> object:
        # The steps freshcache.queryset._read takes before its one round trip.
        from django.db.models.sql.constants import MULTI

        from freshcache.queryset import _plan_and_key

        compiler = qs.query.get_compiler(qs.db)
        sql, params = compiler.as_sql()
        return _plan_and_key(compiler, MULTI, sql, params)

    def decode_floor(self, values: Sequence[bytes | None]) -> object:
        import msgpack

        from freshcache.serializers import loads_rows

        raw = values[0]
        if raw is None:
            return None
        _tokens, data = msgpack.unpackb(raw, use_list=True)
        return loads_rows(data)


_ADAPTERS: dict[str, type[Adapter]] = {
    "none": Adapter,
    "cacheops": Cacheops,
    "cachalot": Cachalot,
    "freshcache": Freshcache,
    "freshcache-locmem": Freshcache,
    "freshcache-cluster": Freshcache,
}


def adapter_for(lib_id: str) -> Adapter:
    return _ADAPTERS[lib_id]()
