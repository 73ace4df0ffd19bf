"""A catalogue: categories and items, with the column types caches have to encode.

No migrations: the worker creates the tables with ``migrate --run-syncdb``.
"""

from __future__ import annotations

from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="items")
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField(default=0)
    active = models.BooleanField(default=True)
    #: Set by the mixed workload's writers from a global counter: newer writes, larger numbers.
    version = models.BigIntegerField(default=0)
    created = models.DateTimeField()

    def __str__(self) -> str:
        return self.title
