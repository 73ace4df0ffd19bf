"""Awkward input: each gives the caller the right answer and no exception from the cache layer."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from freshcache import cached_as
from tests.propapp.models import CodeItem, Keyword, Pair, Person, Team, UUIDItem

pytestmark = pytest.mark.django_db(transaction=True)

PROFILES = {"propapp.*": {"ops": "all", "timeout": 60}}


def cached_twice(queries: Any, read: Any) -> Any:
    first = read()
    with queries() as q:
        second = read()
    assert q.count == 0
    assert first == second
    return first


def test_unpicklable_and_oversized_function_results(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    @cached_as(Team)
    def unpicklable() -> Any:
        runs.append(1)
        return threading.Lock()

    @cached_as(Team)
    def huge() -> str:
        runs.append(2)
        return "x" * 5000

    with override_settings(FRESHCACHE_MAX_VALUE_SIZE=1000), caplog.at_level(logging.DEBUG):
        for _ in range(2):
            assert unpicklable() is not None
            assert huge() == "x" * 5000
    assert runs == [1, 2, 1, 2]
    assert "over the limit" in caplog.text


def test_queryset_on_an_unsaved_instance_behaves_like_django() -> None:
    unsaved = Team(name="nowhere")
    with override_settings(FRESHCACHE_ENABLED=False):
        try:
            expected: Any = list(Person.objects.filter(team=unsaved))
        except ValueError as exc:
            expected = type(exc)
    try:
        got: Any = list(Person.objects.filter(team=unsaved))
    except ValueError as exc:
        got = type(exc)
    assert got == expected


def test_unhashable_and_unkeyable_extra() -> None:
    runs: list[int] = []

    @cached_as(Team, extra={"tags": ["a", "b"], "n": {1, 2}})
    def nested_extra() -> int:
        runs.append(1)
        return 1

    @cached_as(Team, extra=lambda: object())
    def unkeyable_extra() -> int:
        runs.append(2)
        return 2

    for _ in range(2):
        assert nested_extra() == 1
        assert unkeyable_extra() == 2
    assert runs == [1, 2, 2]


@override_settings(FRESHCACHE=PROFILES)
def test_non_ascii_and_very_long_values(queries: Any) -> None:
    name = "Zürich/東京/" + "ŝ" * 2000
    Team.objects.create(name=name[:50])
    Person.objects.create(name=name[:50])
    assert cached_twice(queries, lambda: [t.name for t in Team.objects.filter(name=name[:50])])
    long_value = "y" * 100_000
    assert cached_twice(queries, lambda: list(Team.objects.filter(name=long_value))) == []
    Team.objects.create(name=name[:50])
    assert len(Team.objects.filter(name=name[:50])) == 2


@override_settings(FRESHCACHE=PROFILES)
def test_custom_primary_keys_and_columns(queries: Any) -> None:
    key = uuid.uuid4()
    UUIDItem.objects.create(id=key, name="u")
    CodeItem.objects.create(code="ABC-1", label="first")
    Pair.objects.create(left=1, right=2, note="n")
    assert cached_twice(queries, lambda: UUIDItem.objects.get(pk=key).name) == "u"
    assert cached_twice(queries, lambda: CodeItem.objects.get(pk="ABC-1").label) == "first"
    assert cached_twice(queries, lambda: Pair.objects.get(left=1, right=2).note) == "n"
    UUIDItem.objects.filter(pk=key).update(name="v")
    CodeItem.objects.filter(label="first").update(label="second")
    pair = Pair.objects.get(left=1, right=2)
    pair.right, pair.note = 3, "moved"
    pair.save()
    assert UUIDItem.objects.get(pk=key).name == "v"
    assert CodeItem.objects.get(pk="ABC-1").label == "second"
    assert not Pair.objects.filter(left=1, right=2).exists()
    assert Pair.objects.get(left=1, right=3).note == "moved"


@override_settings(FRESHCACHE=PROFILES)
def test_tables_and_columns_named_with_sql_keywords(queries: Any) -> None:
    Keyword.objects.create(group="g", order=1)
    orders = lambda: list(Keyword.objects.filter(group="g").values_list("order", flat=True))  # noqa: E731
    assert cached_twice(queries, orders) == [1]
    Keyword.objects.filter(group="g").update(order=2)
    assert list(Keyword.objects.filter(group="g").values_list("order", flat=True)) == [2]
    with connection.cursor() as cursor:
        table = connection.ops.quote_name("order")
        column = connection.ops.quote_name("from")
        cursor.execute(f"UPDATE {table} SET {column} = 3")
    assert list(Keyword.objects.filter(group="g").values_list("order", flat=True)) == [3]


@override_settings(FRESHCACHE=PROFILES)
def test_ten_thousand_element_in_list(queries: Any) -> None:
    team = Team.objects.create(name="t")
    values = list(range(10**7, 10**7 + 10_000))
    values[5] = team.pk
    names = lambda: list(Team.objects.filter(pk__in=values).values_list("name", flat=True))  # noqa: E731
    assert cached_twice(queries, names) == ["t"]
    Team.objects.create(name="another")  # > max_in: the whole table is the dependency
    assert list(Team.objects.filter(pk__in=values).values_list("name", flat=True)) == ["t"]
    Team.objects.filter(pk=team.pk).update(name="renamed")
    assert list(Team.objects.filter(pk__in=values).values_list("name", flat=True)) == ["renamed"]
