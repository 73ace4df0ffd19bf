"""Generated columns (``GeneratedField``): values the database computes from the row's others.

A write never names a generated column, yet changes it whenever it changes one it is computed
from. Each test caches reads keyed by a generated column's value, writes the columns it is
computed from in each way Django can, and reads again; a write whose invalidation went by the
values Django sent, not by what the database computed, would leave the second read stale.
Collected on Django 5.0+ only (conftest), where ``GeneratedField`` exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Concat
from django.test import override_settings

from tests.testapp.models import Person  # type: ignore[attr-defined]

pytestmark = pytest.mark.django_db(transaction=True)


def named(full: str) -> list[int]:
    return sorted(Person.objects.filter(full=full).values_list("pk", flat=True))


def writes(person: Any) -> list[tuple[str, Callable[[], None]]]:
    def save() -> None:
        person.last = "Lovelace"
        person.save()

    def save_fields() -> None:
        person.last = "Lovelace"
        person.save(update_fields=["last"])

    def update() -> None:
        Person.objects.filter(pk=person.pk).update(last="Lovelace")

    def update_expression() -> None:
        Person.objects.filter(pk=person.pk).update(last=Concat(Value("Love"), Value("lace")))

    def update_many() -> None:
        Person.objects.filter(first="Ada").update(last="Lovelace")

    def bulk_update() -> None:
        person.last = "Lovelace"
        Person.objects.bulk_update([person], ["last"])

    def in_transaction() -> None:
        with transaction.atomic():
            Person.objects.filter(pk=person.pk).update(last="Lovelace")

    def raw() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Person._meta.db_table} SET last = %s WHERE id = %s",
                ["Lovelace", person.pk],
            )

    return [(f.__name__, f) for f in (save, save_fields, update, update_expression,
                                      update_many, bulk_update, in_transaction, raw)]  # fmt: skip


@pytest.mark.parametrize("way", [name for name, _ in writes(None)])
def test_a_write_reaches_reads_of_the_generated_column(way: str, queries: Any) -> None:
    person = Person.objects.create(first="Ada", last="Byron")
    reads: dict[str, Callable[[], Any]] = {
        "new value": lambda: named("Ada Lovelace"),
        "old value": lambda: named("Ada Byron"),
        "count": lambda: Person.objects.filter(full="Ada Lovelace").count(),
        "get": lambda: Person.objects.get(pk=person.pk).full,
    }
    for read in reads.values():
        read()
        with queries() as q:
            read()
        assert q.count == 0, "precondition: the read is cached"
    dict(writes(person))[way]()
    for name, read in reads.items():
        with override_settings(FRESHCACHE_ENABLED=False):
            truth = read()
        assert read() == truth, f"{name} is stale after {way}"
    assert named("Ada Lovelace") == [person.pk]
    assert named("Ada Byron") == []


def test_an_insert_reaches_reads_of_the_generated_column(queries: Any) -> None:
    assert named("Ada Lovelace") == []
    Person.objects.create(first="Ada", last="Lovelace")
    assert len(named("Ada Lovelace")) == 1
    Person.objects.bulk_create([Person(first="Ada", last="Lovelace")])
    assert len(named("Ada Lovelace")) == 2


def test_a_delete_reaches_reads_of_the_generated_column() -> None:
    person = Person.objects.create(first="Ada", last="Lovelace")
    assert named("Ada Lovelace") == [person.pk]
    Person.objects.filter(last="Lovelace").delete()
    assert named("Ada Lovelace") == []
