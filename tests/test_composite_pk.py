"""Models with a primary key of several columns (``CompositePrimaryKey``, Django 5.2+).

No one column names such a row, so every write to the table invalidates the whole table, and
the fast paths (``get()``, ``save()``) leave such models to Django. Each write below must leave
every cached read of the table equal to the database. Collected on Django 5.2+ only (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models import Sum

from tests.conftest import on_another_connection
from tests.testapp.models import Pair  # type: ignore[attr-defined]

pytestmark = pytest.mark.django_db(transaction=True)


def reads() -> dict[str, Any]:
    return {
        "count": Pair.objects.count(),
        "labels": list(Pair.objects.filter(left=1).order_by("right").values_list("label")),
        "sum": Pair.objects.filter(label="a").aggregate(s=Sum("weight"))["s"],
        "rows": [(p.left, p.right, p.label, p.weight) for p in Pair.objects.order_by("pk")],
        "exists": Pair.objects.filter(weight__gt=5).exists(),
    }


def in_db() -> dict[str, Any]:
    def read() -> dict[str, Any]:
        qs = Pair.objects.nocache()
        return {
            "count": qs.count(),
            "labels": list(qs.filter(left=1).order_by("right").values_list("label")),
            "sum": qs.filter(label="a").aggregate(s=Sum("weight"))["s"],
            "rows": [(p.left, p.right, p.label, p.weight) for p in qs.order_by("pk")],
            "exists": qs.filter(weight__gt=5).exists(),
        }

    return on_another_connection(read)


def test_every_write_leaves_every_cached_read_fresh() -> None:
    def create() -> None:
        Pair.objects.create(left=1, right="x", label="a", weight=1)

    def save() -> None:
        p = Pair.objects.get(pk=(1, "x"))
        p.weight = 7
        p.save()

    def save_label() -> None:
        p = Pair.objects.nocache().get(pk=(1, "x"))
        p.label = "b"
        p.save(update_fields=["label"])

    def bulk() -> None:
        Pair.objects.bulk_create(
            [Pair(left=1, right="y", label="a", weight=2), Pair(left=2, right="y", label="a")]
        )

    def update() -> None:
        Pair.objects.filter(left=1).update(weight=9)

    def delete_one() -> None:
        Pair.objects.get(pk=(2, "y")).delete()

    def delete_some() -> None:
        Pair.objects.filter(label="a").delete()

    assert reads() == in_db()
    for write in (create, save, save_label, bulk, update, delete_one, delete_some):
        reads()  # cached before the write
        write()
        assert reads() == in_db(), write.__name__
