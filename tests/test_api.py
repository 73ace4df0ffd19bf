"""The public surface: ``__all__`` is exactly what the package exports, sorted."""

from __future__ import annotations
import __future__

import types

import freshcache


def test_all_matches_exports() -> None:
    public = {
        name
        for name, value in vars(freshcache).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert set(freshcache.__all__) - {"__version__"} == public
    assert list(freshcache.__all__) == sorted(freshcache.__all__)


def test_every_exported_name_resolves() -> None:
    for name in freshcache.__all__:
        assert getattr(freshcache, name) is not None
