"""The models of the flash seeds (000, 001): users, events, participations, avatars; plus a
generic-relation model and seed 002's article with a ``CachedManager``."""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models

from freshcache import CachedManager


class User(models.Model):
    username = models.CharField(max_length=50, unique=True)
    name = models.CharField(max_length=100, blank=True, default="")


class Event(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    title = models.CharField(max_length=100)

    class CacheMeta:
        get_key_fields_list = [("slug",)]


class Participation(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="participations")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="participations")
    score = models.IntegerField(default=0)

    class Meta:
        ordering = ["id"]

    class CacheMeta:
        cached_foreignkeys = ["event", "user"]


class Avatar(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="avatars")
    file_path = models.FileField(upload_to="avatars/")
    primary = models.BooleanField(default=False)


class Flag(models.Model):
    """Anything can be flagged: a GenericForeignKey as a key field."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    reason = models.CharField(max_length=50)

    class Meta:
        ordering = ["id"]


class Article(models.Model):
    """Seed 002: articles, some featured, read through ``CachedManager``."""

    title = models.CharField(max_length=100)
    body = models.TextField(default="")
    featured = models.BooleanField(default=False)
    author = models.ForeignKey(User, on_delete=models.CASCADE, related_name="articles", null=True)

    objects = CachedManager()

    class Meta:
        ordering = ["id"]
