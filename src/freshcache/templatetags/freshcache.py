"""``{% load freshcache %}``: ``{% cached %}``, ``{% cached_as %}`` and ``decorator_tag``.

::

    {% cached 600 "sidebar" request.user.is_staff %}...{% endcached %}
    {% cached_as articles 600 "article-list" page %}...{% endcached_as %}

``Library.decorator_tag`` turns a function returning a decorator into a block tag whose body is
rendered through that decorator, as the seed's ``cached_as`` tag is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context import Context

from freshcache.fragments import fragment_function, render_cached, render_cached_as

__all__ = ["Library", "register"]


class DecoratorNode(template.Node):
    def __init__(
        self, decorator_factory: Callable[..., Any], args: list[FilterExpression], body: NodeList
    ) -> None:
        self.decorator_factory = decorator_factory
        self.args = args
        self.body = body

    def render(self, context: Context) -> str:
        values = [arg.resolve(context) for arg in self.args]
        decorator = self.decorator_factory(*values)
        return str(decorator(fragment_function(lambda: self.body.render(context)))())


class Library(template.Library):
    def decorator_tag(self, func: Callable[..., Any] | None = None, name: str | None = None) -> Any:
        """Register ``func`` (returning a decorator) as a block tag ``{% name args %}``."""

        def register_tag(factory: Callable[..., Any]) -> Callable[..., Any]:
            tag_name = name or factory.__name__

            def compile_tag(parser: Parser, token: Token) -> DecoratorNode:
                bits = token.split_contents()[1:]
                body = parser.parse((f"end{tag_name}",))
                parser.delete_first_token()
                return DecoratorNode(factory, [parser.compile_filter(b) for b in bits], body)

            self.tag(tag_name, compile_tag)
            return factory

        return register_tag(func) if func is not None else register_tag


register = Library()


class _CachedNode(template.Node):
    def __init__(self, args: list[FilterExpression], body: NodeList, with_sample: bool) -> None:
        self.args = args
        self.body = body
        self.with_sample = with_sample

    def render(self, context: Context) -> str:
        values = [arg.resolve(context) for arg in self.args]
        render = lambda: self.body.render(context)  # noqa: E731
        if self.with_sample:
            sample, timeout, name, *extra = values
            return render_cached_as(render, sample, _seconds(timeout), str(name), tuple(extra))
        timeout, name, *extra = values
        return render_cached(render, _seconds(timeout), str(name), tuple(extra))


def _seconds(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _block(with_sample: bool, tag: str) -> Callable[[Parser, Token], _CachedNode]:
    least = 3 if with_sample else 2

    def compile_tag(parser: Parser, token: Token) -> _CachedNode:
        bits = token.split_contents()[1:]
        if len(bits) < least:
            usage = "queryset timeout fragment_name" if with_sample else "timeout fragment_name"
            raise template.TemplateSyntaxError(f"usage: {{% {tag} {usage} [extra ...] %}}")
        body = parser.parse((f"end{tag}",))
        parser.delete_first_token()
        return _CachedNode([parser.compile_filter(b) for b in bits], body, with_sample)

    return compile_tag


register.tag("cached", _block(False, "cached"))
register.tag("cached_as", _block(True, "cached_as"))
