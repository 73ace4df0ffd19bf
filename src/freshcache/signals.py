"""Signals for monitoring: what was read from the cache, and what was invalidated.

``cache_read(sender=model_or_None, func=callable_or_None, hit=bool)`` fires for every cached
read. ``cache_invalidated(sender=None, table=str, whole_table=bool, rows=[{column: value}])``
fires for every invalidation delivered to the backend (``table='*'`` for everything under the
prefix), after the transaction that caused it committed. Receivers run on the hot path: keep
them cheap.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["cache_invalidated", "cache_read"]

cache_read = Signal()
cache_invalidated = Signal()
