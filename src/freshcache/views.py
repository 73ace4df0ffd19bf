"""What a cached view's response is keyed on, and which responses may be stored: shared by
``cached_view_as`` (invalidated) and ``cache.cached_view`` (time-based)."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse

__all__ = ["cacheable_response", "request_key", "uri_keys", "view_extra", "view_wrapper"]

logger = logging.getLogger("freshcache")


def cacheable_response(response: Any, request: Any = None, per_user_ok: bool = False) -> bool:
    """Whether a view's response may be stored and served to other requests.

    Only complete 200 responses, never streaming ones, never ones that set cookies (they would
    be replayed to everyone) or carry a CSRF token (it belongs to one visitor). A response that
    may differ per user (``Vary: Cookie``/``Authorization``, the session read, ``request.user``
    loaded: the middleware adds ``Vary`` only after the view returns) is stored only when the
    caller's key already tells users apart (``per_user_ok``: an ``extra`` was given).
    """
    if not isinstance(response, HttpResponse) or response.status_code != 200:
        return False
    if getattr(response, "streaming", False):
        return False
    if hasattr(response, "render") and not getattr(response, "is_rendered", True):
        response.render()  # a TemplateResponse: store the rendered page
    reason = _personal(response, request)
    if reason is None:
        return True
    if per_user_ok and reason in ("varies", "session", "user"):
        return True
    logger.debug("freshcache: response not cached (%s)", reason)
    return False


def _personal(response: HttpResponse, request: Any) -> str | None:
    if response.cookies:
        return "cookies"
    meta = getattr(request, "META", {})
    if meta.get("CSRF_COOKIE_NEEDS_UPDATE") or meta.get("CSRF_COOKIE_USED"):
        return "csrf"
    vary = {v.strip().lower() for v in response.get("Vary", "").split(",") if v.strip()}
    if vary & {"cookie", "authorization", "*"}:
        return "varies"
    session = getattr(request, "session", None)
    if session is not None and getattr(session, "accessed", False):
        return "session"
    if getattr(request, "_cached_user", None) is not None:
        return "user"
    return None


def request_key(request: HttpRequest | str) -> str:
    """Host, path and query string: what a view's response is keyed on (with ``extra``). A
    string is such a text already (:func:`uri_keys`)."""
    if isinstance(request, str):
        return request
    return f"{request.META.get('HTTP_HOST', '')}{request.get_full_path()}"


def uri_keys(uri: str) -> list[str]:
    """The request keys a response for ``uri`` (``request.build_absolute_uri()``) may be under:
    with its host, for a request that sent one, and without."""
    split = urlsplit(uri)
    path = (split.path or "/") + (f"?{split.query}" if split.query else "")
    return list(dict.fromkeys([f"{split.netloc}{path}", path]))


def view_extra(extra: Any, request: HttpRequest | str, *args: Any, **kwargs: Any) -> Any:
    """``extra`` for this call; a callable one needs the request, not a URI."""
    if not callable(extra):
        return extra
    if isinstance(request, str):
        raise TypeError(
            "this view's key has a callable extra, which needs the request: pass "
            ".invalidate() the request rather than a URI"
        )
    return extra(request, *args, **kwargs)


def view_wrapper(view: Callable[..., Any], inner: Callable[..., Any]) -> Any:
    """Send GET and HEAD to the cached ``inner``, other methods straight to the view; async
    views get an async wrapper."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method not in ("GET", "HEAD"):
                return await view(request, *args, **kwargs)
            return await inner(request, *args, **kwargs)

        wrapper: Any = async_view
    else:

        @functools.wraps(view)
        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            return inner(request, *args, **kwargs)

        wrapper = sync_view

    def invalidate(request: HttpRequest | str, *args: Any, **kwargs: Any) -> None:
        """Forget the response to ``request``, or to a URI (cacheops accepts
        ``request.build_absolute_uri()``)."""
        forget = inner.invalidate  # type: ignore[attr-defined]
        for text in uri_keys(request) if isinstance(request, str) else [request]:
            forget(text, *args, **kwargs)

    wrapper.invalidate = invalidate
    wrapper.key = inner.key  # type: ignore[attr-defined]
    return wrapper
