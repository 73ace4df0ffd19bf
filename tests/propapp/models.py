"""Models for the stateful freshness test: every relation kind and a mix of value types."""

from __future__ import annotations

from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=50)
    budget = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    meta = models.JSONField(default=dict)


class Person(models.Model):
    name = models.CharField(max_length=50, unique=True)
    team = models.ForeignKey(Team, null=True, on_delete=models.SET_NULL, related_name="people")
    mentor = models.ForeignKey("self", null=True, on_delete=models.SET_NULL, related_name="mentees")
    score = models.IntegerField(default=0)
    joined = models.DateTimeField(null=True)


class Label(models.Model):
    text = models.CharField(max_length=20)


class Project(models.Model):
    title = models.CharField(max_length=50)
    owner = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="projects")
    labels = models.ManyToManyField(Label, related_name="projects")
    members = models.ManyToManyField(Person, through="Assignment", related_name="work")
    active = models.BooleanField(default=True)


class Assignment(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    person = models.ForeignKey(Person, on_delete=models.CASCADE)
    role = models.CharField(max_length=10, default="dev")


class ActiveProject(Project):
    class Meta:
        proxy = True


class Milestone(Project):
    """Multi-table child of Project."""

    due = models.DateField(null=True)
    done = models.BooleanField(default=False)


class UUIDItem(models.Model):
    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)


class CodeItem(models.Model):
    code = models.CharField(max_length=20, primary_key=True)
    label = models.CharField(max_length=200, db_column="the_label")


class Pair(models.Model):
    left = models.IntegerField()
    right = models.IntegerField()
    note = models.TextField(default="")

    class Meta:
        unique_together = [("left", "right")]


class Keyword(models.Model):
    """A table and columns named with SQL keywords."""

    group = models.CharField(max_length=20, db_column="select")
    order = models.IntegerField(db_column="from", default=0)

    class Meta:
        db_table = "order"
