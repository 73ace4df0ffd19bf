from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Value
from django.db.models.functions import Concat


class Category(models.Model):
    title = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True, null=True)

    def __str__(self) -> str:
        return self.title


class Author(models.Model):
    name = models.CharField(max_length=100)
    email = models.CharField(max_length=100, blank=True, default="")


class Tag(models.Model):
    name = models.CharField(max_length=50)


class VisiblePosts(models.Manager["Post"]):
    """A manager that filters: its querysets start from a chain, not from a fresh query."""

    def get_queryset(self) -> models.QuerySet[Post]:
        return super().get_queryset().filter(visible=True)


class ScoredPosts(models.Manager["Post"]):
    """A manager that filters in a way no chain records (a Q object)."""

    def get_queryset(self) -> models.QuerySet[Post]:
        return super().get_queryset().filter(models.Q(score__gt=0) | models.Q(score__lt=0))


class Post(models.Model):
    title = models.CharField(max_length=200)
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="posts")
    author = models.ForeignKey(
        Author, on_delete=models.SET_NULL, null=True, blank=True, related_name="posts"
    )
    visible = models.BooleanField(default=True)
    score = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True)
    created = models.DateTimeField(null=True)
    tags = models.ManyToManyField(Tag, related_name="posts", blank=True)

    objects = models.Manager()
    visible_posts = VisiblePosts()
    scored_posts = ScoredPosts()

    class Meta:
        ordering = ["id"]


class Comment(models.Model):
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="comments")
    text = models.CharField(max_length=200)


class Membership(models.Model):
    """Explicit through model."""

    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    group = models.ForeignKey("Group", on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="member")


class Group(models.Model):
    name = models.CharField(max_length=50)
    members = models.ManyToManyField(Author, through=Membership, related_name="groups")


class Profile(models.Model):
    author = models.OneToOneField(Author, on_delete=models.CASCADE, related_name="profile")
    bio = models.CharField(max_length=200, default="")


class VisiblePost(Post):
    """Proxy."""

    class Meta:
        proxy = True


class Place(models.Model):
    name = models.CharField(max_length=50)
    city = models.CharField(max_length=50, default="")


class Restaurant(Place):
    """Multi-table inheritance child."""

    serves_pizza = models.BooleanField(default=False)


class NormalizedCharField(models.CharField):  # type: ignore[type-arg]
    """Writes its value stripped and lowercased, without putting it back on the instance."""

    def pre_save(self, model_instance: models.Model, add: bool) -> object:
        value = getattr(model_instance, self.attname)
        return value.strip().lower() if isinstance(value, str) else value


class Member(models.Model):
    handle = NormalizedCharField(max_length=50)
    level = models.IntegerField(default=0)


class Ticket(models.Model):
    """Saved with ``select_on_save``: Django checks that the row exists before updating it."""

    title = models.CharField(max_length=50)
    priority = models.IntegerField(default=0)

    class Meta:
        select_on_save = True


class _EqualToNothing(str):
    """A prepared value that equals nothing, as a driver's adapter without equality does."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class UnequalCharField(models.CharField):  # type: ignore[type-arg]
    """Prepares its values as :class:`_EqualToNothing`; the database stores them as text."""

    def get_db_prep_save(self, value: object, connection: object) -> object:
        value = super().get_db_prep_save(value, connection)
        return _EqualToNothing(value) if isinstance(value, str) else value


class Badge(models.Model):
    label = UnequalCharField(max_length=50)
    level = models.IntegerField(default=0)


class Note(models.Model):
    """A table name with capitals, which SQLite matches whatever the case a statement uses."""

    text = models.CharField(max_length=50)

    class Meta:
        db_table = "TestApp_Note"


class Qualified(models.Model):
    """A table named with its schema, as Django allows on PostgreSQL (SQLite has no schemas).
    Django's flush between tests does not see such a table: tests empty it themselves."""

    text = models.CharField(max_length=50)

    class Meta:
        db_table = (
            '"public"."testapp_qualified"'
            if "postgresql" in settings.DATABASES["default"]["ENGINE"]
            else "testapp_qualified"
        )


if hasattr(models, "GeneratedField"):  # Django 5.0+: columns the database computes

    class Person(models.Model):
        first = models.CharField(max_length=50)
        last = models.CharField(max_length=50)
        full = models.GeneratedField(
            expression=Concat("first", Value(" "), "last"),
            output_field=models.CharField(max_length=101),
            db_persist=True,
        )


if hasattr(models, "DB_CASCADE"):  # Django 6.1+: on_delete carried out by the database
    #: The shelf labels fall back to when theirs is deleted (created by the tests that need it).
    LOST_AND_FOUND = 900_000

    class Shelf(models.Model):
        name = models.CharField(max_length=50)

    class Book(models.Model):
        shelf = models.ForeignKey(Shelf, on_delete=models.DB_CASCADE, related_name="books")
        title = models.CharField(max_length=50)

    class Chapter(models.Model):
        book = models.ForeignKey(Book, on_delete=models.DB_CASCADE, related_name="chapters")
        title = models.CharField(max_length=50)

    class Loan(models.Model):
        shelf = models.ForeignKey(
            Shelf, on_delete=models.DB_SET_NULL, null=True, related_name="loans"
        )
        who = models.CharField(max_length=50)

    class Label(models.Model):
        shelf = models.ForeignKey(
            Shelf, on_delete=models.DB_SET_DEFAULT, db_default=LOST_AND_FOUND, related_name="labels"
        )
        text = models.CharField(max_length=50)

    class Node(models.Model):
        parent = models.ForeignKey(
            "self", on_delete=models.DB_CASCADE, null=True, related_name="children"
        )
        name = models.CharField(max_length=50)


if hasattr(models, "CompositePrimaryKey"):  # Django 5.2+: a primary key of several columns

    class Pair(models.Model):
        pk = models.CompositePrimaryKey("left", "right")
        left = models.IntegerField()
        right = models.CharField(max_length=20)
        label = models.CharField(max_length=50)
        weight = models.IntegerField(default=0)
