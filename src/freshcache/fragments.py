"""Template fragments: one cached render function per tag, shared by Django templates and
Jinja2, so that ``invalidate_fragment`` names the same key either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from freshcache.decorators import cached_as
from freshcache.simple import cache

__all__ = ["fragment_function", "invalidate_fragment", "render_cached", "render_cached_as"]


def fragment_function(render: Callable[[], str] | None) -> Callable[[], str]:
    """A zero-argument function with one fixed identity for every fragment: fragments are told
    apart by their name and extra values alone, which is what their key is built from."""

    def fragment() -> str:
        assert render is not None
        return render()

    fragment.__module__ = "freshcache.fragments"
    fragment.__qualname__ = "fragment"
    return fragment


def render_cached(
    render: Callable[[], str], timeout: int | None, name: str, extra: tuple[Any, ...]
) -> str:
    """``{% cached timeout name extra... %}``: a time-based fragment."""
    return str(cache.cached(timeout=timeout, extra=(name, *extra))(fragment_function(render))())


def render_cached_as(
    render: Callable[[], str],
    sample: Any,
    timeout: int | None,
    name: str,
    extra: tuple[Any, ...],
) -> str:
    """``{% cached_as queryset timeout name extra... %}``: invalidated when the sample changes."""
    samples = tuple(sample) if isinstance(sample, (list, tuple)) else (sample,)
    wrapped = cached_as(*samples, timeout=timeout, extra=(name, *extra))
    return str(wrapped(fragment_function(render))())


def invalidate_fragment(fragment_name: str, *extra: Any) -> None:
    """Invalidate a ``{% cached %}`` or ``{% cached_as %}`` fragment by name and extra values."""
    extra_values = (fragment_name, *extra)
    cache.cached(extra=extra_values)(fragment_function(None)).invalidate()  # type: ignore[attr-defined]
    cached_as(extra=extra_values)(fragment_function(None)).invalidate()  # type: ignore[attr-defined]
