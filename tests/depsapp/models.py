"""Models for the dependency tests: every relation shape ``dependencies.py`` must read."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50)
    slug = models.SlugField(unique=True)

    class Meta:
        ordering = ["name"]


class Author(models.Model):
    name = models.CharField(max_length=50)
    email = models.EmailField(blank=True)


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Post(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        LIVE = "live"

    class Rank(models.IntegerChoices):
        LOW = 1
        HIGH = 2

    category = models.ForeignKey(Category, models.CASCADE)
    author = models.ForeignKey(Author, models.SET_NULL, null=True, blank=True)
    title = models.CharField(max_length=100)
    published = models.BooleanField(default=False)
    score = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    created = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    rank = models.IntegerField(choices=Rank.choices, default=Rank.LOW)
    tags = models.ManyToManyField(Tag, blank=True, related_name="posts")


class ProxyPost(Post):
    class Meta:
        proxy = True
        ordering = ["-score"]


class Comment(models.Model):
    post = models.ForeignKey(Post, models.CASCADE, related_name="comments")
    text = models.CharField(max_length=100)
    approved = models.BooleanField(default=False)


class Node(models.Model):
    """A self-referencing tree."""

    name = models.CharField(max_length=50)
    parent = models.ForeignKey("self", models.CASCADE, null=True, blank=True, related_name="kids")


class Group(models.Model):
    name = models.CharField(max_length=50)


class Person(models.Model):
    name = models.CharField(max_length=50)
    groups = models.ManyToManyField(Group, through="Membership", related_name="members")


class Membership(models.Model):
    """An explicit m2m through model with its own data."""

    person = models.ForeignKey(Person, models.CASCADE)
    group = models.ForeignKey(Group, models.CASCADE)
    role = models.CharField(max_length=20)


class Place(models.Model):
    name = models.CharField(max_length=50)
    city = models.CharField(max_length=50)


class Restaurant(Place):
    """Multi-table inheritance: rows live in two tables."""

    serves_pizza = models.BooleanField(default=False)
    chef = models.ForeignKey(Author, models.CASCADE, null=True, blank=True)


class ProxyRestaurant(Restaurant):
    class Meta:
        proxy = True
        ordering = ["name"]


class LegacyItem(models.Model):
    """Columns whose names differ from the attribute names."""

    code = models.CharField(max_length=20, db_column="ITEM_CODE")
    qty = models.IntegerField(db_column="QTY")
    owner = models.ForeignKey(Author, models.CASCADE, db_column="OWNER_REF")


class Document(models.Model):
    """A custom table name and a UUID primary key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=50)
    author = models.ForeignKey(Author, models.CASCADE, null=True)

    class Meta:
        db_table = "deps_documents"


class Folder(models.Model):
    """Points at Document's UUID primary key."""

    name = models.CharField(max_length=50)
    document = models.ForeignKey(Document, models.CASCADE)


# SQLite's NOCASE makes ``name='abc'`` match ``'ABC'``; PostgreSQL has no such built-in
# collation, and any explicit collation must make the condition table-wide anyway.
_COLLATION = "NOCASE" if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") else "C"


class Nocase(models.Model):
    """A column with an explicit collation (case-insensitive on SQLite)."""

    name = models.CharField(max_length=50, db_collation=_COLLATION)
    label = models.CharField(max_length=50, default="")


class Sample(models.Model):
    """One column of each value type ``normalize`` understands, and some it does not."""

    ratio = models.FloatField(null=True)
    day = models.DateField(null=True)
    moment = models.TimeField(null=True)
    span = models.DurationField(null=True)
    data = models.JSONField(null=True)
    blob = models.BinaryField(null=True)
    ref = models.UUIDField(null=True)
