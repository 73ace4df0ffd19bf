"""The exceptions freshcache raises, in one tree so callers can catch at the level they care about.

::

    FreshcacheError
     ├── ImproperlyConfigured        (also django.core.exceptions.ImproperlyConfigured)
     ├── BackendError                a backend (Redis, ...) failed; wraps the client's exception
     │    └── LockTimeout            waiting for a dog-pile lock took longer than allowed
     ├── PayloadError                a stored payload could not be decoded or verified
     │    └── SignatureError         a signed pickle's HMAC did not match
     ├── SerializationError          a value cannot be stored with the chosen codec
     └── UncacheableQuery            a query's dependencies cannot be determined safely

Only ``BackendError`` (without ``FRESHCACHE_DEGRADE_ON_FAILURE``) and ``ImproperlyConfigured`` ever
reach user code: the others are turned into a cache miss, or into "not cached", where they happen,
because the right answer is always available from the database.
"""

from __future__ import annotations

from django.core import exceptions as django_exceptions

__all__ = [
    "BackendError",
    "FreshcacheError",
    "ImproperlyConfigured",
    "LockTimeout",
    "PayloadError",
    "SerializationError",
    "SignatureError",
    "UncacheableQuery",
]


class FreshcacheError(Exception):
    """Base of every exception raised by freshcache."""


class ImproperlyConfigured(FreshcacheError, django_exceptions.ImproperlyConfigured):
    """A FRESHCACHE_* setting is wrong; the message names the setting and the fix."""


class BackendError(FreshcacheError):
    """The cache backend failed. ``__cause__`` is the client library's exception."""


class LockTimeout(BackendError):
    """A dog-pile lock could not be acquired or waited for in time."""


class PayloadError(FreshcacheError):
    """A stored payload is corrupt, truncated, or from an incompatible version."""


class SignatureError(PayloadError):
    """A signed payload failed HMAC verification: someone else wrote it, or the key changed."""


class SerializationError(FreshcacheError):
    """A value has a type the codec cannot store; the value is returned uncached."""


class UncacheableQuery(FreshcacheError):
    """A query reads something whose changes freshcache cannot track (raw SQL, random order...)."""
