"""The Jinja2 extension ``freshcache.jinja2.cache``: the same two fragment tags.

::

    {% cached timeout=600, extra=user.is_staff %}...{% endcached %}
    {% cached_as articles, timeout=600, extra=page %}...{% endcached_as %}

A fragment is named by its template and line unless ``name=`` is given (the name
``invalidate_fragment`` takes). A template made with ``Environment.from_string()`` has no name:
there the digest of its source stands for it, so two such templates never share a fragment.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser

from freshcache.fragments import render_cached, render_cached_as

__all__ = ["CacheExtension", "cache"]


#: The digest of the nameless template this thread is compiling (``preprocess`` sees the
#: source, ``parse`` runs next in the same thread).
_compiling = threading.local()


class CacheExtension(Extension):
    tags = {"cached", "cached_as"}

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if name is None:
            _compiling.digest = hashlib.blake2b(source.encode(), digest_size=8).hexdigest()
        return source

    def parse(self, parser: Parser) -> nodes.Node:
        tag = next(parser.stream)
        lineno = tag.lineno
        args: list[nodes.Expr] = []
        if tag.value == "cached_as":
            args.append(parser.parse_expression())
        kwargs: dict[str, nodes.Expr] = {}
        while parser.stream.current.type != "block_end":
            if args or kwargs:
                parser.stream.skip_if("comma")
            name_token = parser.stream.expect("name")
            if name_token.value not in ("timeout", "name", "extra"):
                parser.fail(
                    f"{tag.value}: unknown argument {name_token.value!r}; "
                    "use timeout=, name= or extra=",
                    name_token.lineno,
                )
            parser.stream.expect("assign")
            kwargs[name_token.value] = parser.parse_expression()
        where = parser.name or f"source:{getattr(_compiling, 'digest', None)}"
        default_name = f"jinja2:{where}:{lineno}"
        call_args = [
            *args,
            kwargs.get("timeout", nodes.Const(None)),
            kwargs.get("name", nodes.Const(default_name)),
            kwargs.get("extra", nodes.Const(None)),
        ]
        method = "_cached_as" if tag.value == "cached_as" else "_cached"
        body = parser.parse_statements((f"name:end{tag.value}",), drop_needle=True)
        call = self.call_method(method, call_args)
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _cached(self, timeout: Any, name: str, extra: Any, caller: Any) -> str:
        return render_cached(caller, _seconds(timeout), name, _extra(extra))

    def _cached_as(self, sample: Any, timeout: Any, name: str, extra: Any, caller: Any) -> str:
        return render_cached_as(caller, sample, _seconds(timeout), name, _extra(extra))


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)


def _extra(value: Any) -> tuple[Any, ...]:
    return () if value is None else (value,)


cache = CacheExtension
