"""``{% load freshcache %}``: ``{% cached %}``, ``{% cached_as %}`` and ``decorator_tag``.

::

    {% cached 600 "sidebar" request.user.is_staff %}...{% endcached %}
    {% cached_as articles 600 "article-list" page %}...{% endcached_as %}

Arguments are template expressions, positional or ``name=value`` (``{% cached timeout=600
fragment_name="sidebar" %}``), as in django-cacheops. ``Library.decorator_tag`` turns a
function returning a decorator into a block tag whose body is rendered through that decorator,
as the seed's ``cached_as`` tag is built.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context import Context

from freshcache.fragments import fragment_function, render_cached, render_cached_as

__all__ = ["Library", "register"]

Args = tuple[list[FilterExpression], dict[str, FilterExpression]]


#: ``name=value``: a template argument given by name.
_NAMED = re.compile(r"(\w+)=(.+)", re.DOTALL)


def _parse(parser: Parser, token: Token, func: Callable[..., Any], takes_context: bool) -> Args:
    """The tag's arguments, positional then named, checked against ``func``'s signature when
    the template compiles (a ``TemplateSyntaxError`` names what is missing or unexpected)."""
    name, *bits = token.split_contents()
    args: list[FilterExpression] = []
    kwargs: dict[str, FilterExpression] = {}
    for bit in bits:
        named = _NAMED.fullmatch(bit)
        if named is None:
            if kwargs:
                raise template.TemplateSyntaxError(
                    f"{name!r}: a positional argument ({bit}) after a named one"
                )
            args.append(parser.compile_filter(bit))
        elif named[1] in kwargs:
            raise template.TemplateSyntaxError(f"{name!r}: {named[1]!r} given twice")
        else:
            kwargs[named[1]] = parser.compile_filter(named[2])
    try:
        inspect.signature(func).bind(*([None] if takes_context else []), *args, **kwargs)
    except TypeError as exc:
        raise template.TemplateSyntaxError(f"{name!r}: {exc}") from None
    return args, kwargs


def _resolve(args: Args, context: Context) -> tuple[list[Any], dict[str, Any]]:
    return (
        [a.resolve(context) for a in args[0]],
        {k: v.resolve(context) for k, v in args[1].items()},
    )


class DecoratorNode(template.Node):
    def __init__(
        self, decorator_factory: Callable[..., Any], args: Args, body: NodeList, context: bool
    ) -> None:
        self.decorator_factory = decorator_factory
        self.args = args
        self.body = body
        self.takes_context = context

    def render(self, context: Context) -> str:
        values, named = _resolve(self.args, context)
        if self.takes_context:
            values.insert(0, context)
        decorator = self.decorator_factory(*values, **named)
        return str(decorator(fragment_function(lambda: self.body.render(context)))())


class Library(template.Library):
    def decorator_tag(
        self,
        func: Callable[..., Any] | None = None,
        name: str | None = None,
        takes_context: bool = False,
    ) -> Any:
        """Register ``func`` (returning a decorator) as a block tag ``{% name args %}``; with
        ``takes_context``, ``func`` gets the template context first, as in ``simple_tag``."""

        def register_tag(factory: Callable[..., Any]) -> Callable[..., Any]:
            tag_name = name or factory.__name__

            def compile_tag(parser: Parser, token: Token) -> DecoratorNode:
                args = _parse(parser, token, factory, takes_context)
                body = parser.parse((f"end{tag_name}",))
                parser.delete_first_token()
                return DecoratorNode(factory, args, body, takes_context)

            self.tag(tag_name, compile_tag)
            return factory

        return register_tag(func) if func is not None else register_tag


register = Library()


def _cached(timeout: Any, fragment_name: Any, *extra: Any) -> None:
    """The signature of ``{% cached %}``: checked when the template compiles."""


def _cached_as(queryset: Any, timeout: Any, fragment_name: Any, *extra: Any) -> None:
    """The signature of ``{% cached_as %}``."""


class _CachedNode(template.Node):
    def __init__(self, args: Args, body: NodeList, with_sample: bool) -> None:
        self.args = args
        self.body = body
        self.with_sample = with_sample

    def render(self, context: Context) -> str:
        values, named = _resolve(self.args, context)
        bound = inspect.signature(_cached_as if self.with_sample else _cached).bind(
            *values, **named
        )
        arguments = bound.arguments
        render = lambda: self.body.render(context)  # noqa: E731
        timeout, name = _seconds(arguments["timeout"]), str(arguments["fragment_name"])
        extra = tuple(arguments.get("extra", ()))
        if self.with_sample:
            return render_cached_as(render, arguments["queryset"], timeout, name, extra)
        return render_cached(render, timeout, name, extra)


def _seconds(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _block(with_sample: bool, tag: str) -> Callable[[Parser, Token], _CachedNode]:
    def compile_tag(parser: Parser, token: Token) -> _CachedNode:
        args = _parse(parser, token, _cached_as if with_sample else _cached, False)
        body = parser.parse((f"end{tag}",))
        parser.delete_first_token()
        return _CachedNode(args, body, with_sample)

    return compile_tag


register.tag("cached", _block(False, "cached"))
register.tag("cached_as", _block(True, "cached_as"))
