"""Django 6.1's database-level ``on_delete``: rows the database deletes or updates by itself.

Django sends no statement for the referencing rows of ``DB_CASCADE``, ``DB_SET_NULL`` and
``DB_SET_DEFAULT``; each test caches reads of those rows, deletes the referenced row, and reads
again. Without the invalidation of the referencing tables every second read would be stale.
Collected on Django 6.1+ only (conftest), where these options exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

from freshcache import dbcascade
from tests.test_orm_invalidation import cached
from tests.testapp.models import (  # type: ignore[attr-defined]
    LOST_AND_FOUND,
    Book,
    Chapter,
    Label,
    Loan,
    Node,
    Shelf,
)

pytestmark = pytest.mark.django_db(transaction=True)


def truth(read: Callable[[], Any]) -> Any:
    with override_settings(FRESHCACHE_ENABLED=False):
        return read()


def book_titles() -> list[str]:
    return sorted(Book.objects.values_list("title", flat=True))


def chapter_count() -> int:
    return Chapter.objects.count()


@pytest.fixture
def library() -> dict[str, Any]:
    fallback = Shelf.objects.create(pk=LOST_AND_FOUND, name="lost and found")
    shelf = Shelf.objects.create(name="poetry")
    other = Shelf.objects.create(name="prose")
    book = Book.objects.create(shelf=shelf, title="odes")
    kept = Book.objects.create(shelf=other, title="novel")
    Chapter.objects.create(book=book, title="one")
    Chapter.objects.create(book=kept, title="two")
    loan = Loan.objects.create(shelf=shelf, who="ann")
    label = Label.objects.create(shelf=shelf, text="verse")
    return {"fallback": fallback, "shelf": shelf, "other": other, "book": book, "kept": kept,
            "loan": loan, "label": label}  # fmt: skip


def test_the_graph_follows_db_cascade_and_stops_at_set_null() -> None:
    below = dbcascade.tables_below([Shelf._meta.db_table])
    assert set(below) == {
        Book._meta.db_table,
        Chapter._meta.db_table,
        Loan._meta.db_table,
        Label._meta.db_table,
    }
    assert dbcascade.tables_below([Chapter._meta.db_table]) == ()
    assert dbcascade.tables_below([Node._meta.db_table]) == (Node._meta.db_table,)


def test_instance_delete_reaches_rows_the_database_deleted(
    library: dict[str, Any], queries: Any
) -> None:
    reads: dict[str, Callable[[], Any]] = {
        "titles": book_titles,
        "chapters": chapter_count,
        "get": lambda: Book.objects.filter(pk=library["book"].pk).exists(),
        "by shelf": lambda: list(Book.objects.filter(shelf_id=library["shelf"].pk)),
    }
    before = {name: cached(queries, read) for name, read in reads.items()}
    library["shelf"].delete()
    for name, read in reads.items():
        assert read() == truth(read), f"{name} is stale"
        assert read() != before[name], f"precondition: the delete changed {name}"
    assert book_titles() == ["novel"]
    assert chapter_count() == 1


def test_get_of_a_cascaded_row_raises_after_the_delete(library: dict[str, Any]) -> None:
    pk = library["book"].pk
    assert Book.objects.get(pk=pk).title == "odes"
    assert Book.objects.get(pk=pk).title == "odes"  # from the cache
    Shelf.objects.filter(pk=library["shelf"].pk).delete()
    with pytest.raises(Book.DoesNotExist):
        Book.objects.get(pk=pk)


def test_set_null_and_set_default_are_seen(library: dict[str, Any], queries: Any) -> None:
    loan, label = library["loan"], library["label"]
    cached(queries, lambda: Loan.objects.get(pk=loan.pk).shelf_id)
    cached(queries, lambda: Label.objects.get(pk=label.pk).shelf_id)
    cached(queries, lambda: Loan.objects.filter(shelf__isnull=True).count())
    library["shelf"].delete()
    assert Loan.objects.get(pk=loan.pk).shelf_id is None
    assert Label.objects.get(pk=label.pk).shelf_id == LOST_AND_FOUND
    assert Loan.objects.filter(shelf__isnull=True).count() == 1


def test_self_reference_invalidates_the_table_itself(queries: Any) -> None:
    root = Node.objects.create(name="root")
    child = Node.objects.create(name="child", parent=root)
    Node.objects.create(name="grandchild", parent=child)
    cached(queries, lambda: Node.objects.count())
    cached(queries, lambda: sorted(Node.objects.values_list("name", flat=True)))
    assert Node.objects.get(pk=child.pk).name == "child"
    Node.objects.filter(pk=root.pk).delete()  # the pre-read sees the root row only
    assert Node.objects.count() == 0
    assert list(Node.objects.values_list("name", flat=True)) == []
    with pytest.raises(Node.DoesNotExist):
        Node.objects.get(pk=child.pk)


def test_raw_sql_delete_reaches_the_referencing_tables(
    library: dict[str, Any], queries: Any
) -> None:
    cached(queries, book_titles)
    cached(queries, chapter_count)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Shelf._meta.db_table} WHERE id = %s", [library["shelf"].pk])
    assert book_titles() == ["novel"]
    assert chapter_count() == 1


def test_delete_in_a_transaction_invalidates_at_commit(
    library: dict[str, Any], queries: Any
) -> None:
    cached(queries, book_titles)
    with transaction.atomic():
        library["shelf"].delete()
        assert book_titles() == ["novel"]  # read-your-writes inside the transaction
    assert book_titles() == ["novel"]
    assert chapter_count() == 1


def test_delete_while_disabled_is_invalidated_on_reenable(
    library: dict[str, Any], queries: Any
) -> None:
    cached(queries, book_titles)
    with override_settings(FRESHCACHE_ENABLED=False):
        library["shelf"].delete()
    assert book_titles() == ["novel"]


def test_a_delete_of_nothing_keeps_the_referencing_tables(
    library: dict[str, Any], queries: Any
) -> None:
    cached(queries, book_titles)
    Shelf.objects.filter(name="no such shelf").delete()
    with queries() as q:
        assert book_titles() == ["novel", "odes"]
    assert q.count == 0
