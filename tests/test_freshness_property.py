"""Stateful property test: interleave every kind of write, and after each step check that every
cached query in a pool equals the same query with the cache off.

``make test`` runs a few examples; ``make stress`` runs thousands of steps per configuration
(``FRESHCACHE_STRESS_EXAMPLES``, ``FRESHCACHE_STRESS_STEPS``) and prints the figures.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from freshcache import cached_as
from tests.propapp.models import (
    ActiveProject,
    Assignment,
    Label,
    Milestone,
    Person,
    Project,
    Team,
)

EXAMPLES = int(os.environ.get("FRESHCACHE_STRESS_EXAMPLES", "4"))
STEPS = int(os.environ.get("FRESHCACHE_STRESS_STEPS", "10"))
TEAMS = ["red", "blue", "green"]
ROLES = ["dev", "lead"]
STATS = {"steps": 0, "checks": 0, "stale": 0}


def ids(model: Any, n: int = 3) -> list[int]:
    return list(model.objects.nocache().order_by("id").values_list("id", flat=True)[:n])


@cached_as(timeout=60)
def team_summary() -> list[tuple[str, int, int]]:
    """A function with no samples: its result depends on whatever it reads."""
    return [
        (t.name, t.people.count(), sum(p.score for p in t.people.all()))
        for t in Team.objects.order_by("id")
    ]


def red_people_sample() -> Any:
    return Person.objects.filter(team__name="red")


@cached_as(red_people_sample())
def red_scores() -> list[int]:
    return sorted(red_people_sample().values_list("score", flat=True))


def get_or_none(model: Any, pk: int) -> Any:
    try:
        obj = model.objects.get(pk=pk)
    except model.DoesNotExist:
        return None
    return {k: v for k, v in obj.__dict__.items() if not k.startswith("_")}


def pool(
    person_ids: list[int], project_ids: list[int], team_ids: list[int]
) -> dict[str, Callable[[], Any]]:
    flat = {"flat": True}
    return {
        "people": lambda: list(
            Person.objects.order_by("id").values_list("id", "name", "team_id", "mentor_id", "score")
        ),
        "select_related": lambda: [
            (p.id, p.team.name if p.team else None, p.mentor_id)
            for p in Person.objects.select_related("team").order_by("id")
        ],
        "join": lambda: list(
            Person.objects.filter(team__name="red").order_by("id").values_list("id", **flat)
        ),
        "or": lambda: list(
            Person.objects.filter(Q(score__gte=5) | Q(team__isnull=True))
            .order_by("id")
            .values_list("id", **flat)
        ),
        "not": lambda: list(
            Person.objects.exclude(team__name="red").order_by("id").values_list("id", **flat)
        ),
        "count": lambda: Person.objects.filter(score=3).count(),
        "exists": lambda: Person.objects.filter(team__name="green", score=2).exists(),
        "aggregate": lambda: Person.objects.aggregate(s=Sum("score"), n=Count("id")),
        "annotate_count": lambda: list(
            Team.objects.annotate(n=Count("people")).order_by("id").values_list("id", "n")
        ),
        "m2m_filter": lambda: list(
            Project.objects.filter(labels__text="a")
            .order_by("id")
            .values_list("id", **flat)
            .distinct()
        ),
        "three_tables": lambda: list(
            Project.objects.filter(owner__team__name="blue")
            .order_by("id")
            .values_list("id", **flat)
        ),
        "in_subquery": lambda: list(
            Person.objects.filter(id__in=Project.objects.filter(active=True).values("owner_id"))
            .order_by("id")
            .values_list("id", **flat)
        ),
        "exists_expr": lambda: list(
            Person.objects.filter(
                Exists(Assignment.objects.filter(person=OuterRef("pk"), role="lead"))
            )
            .order_by("id")
            .values_list("id", **flat)
        ),
        "subquery_annotation": lambda: list(
            Team.objects.annotate(
                top=Subquery(
                    Person.objects.filter(team=OuterRef("pk"))
                    .order_by("-score", "id")
                    .values("name")[:1]
                )
            )
            .order_by("id")
            .values_list("id", "top")
        ),
        "prefetch_labels": lambda: [
            (p.id, sorted(x.text for x in p.labels.all()))
            for p in Project.objects.prefetch_related("labels").order_by("id")
        ],
        "prefetch_members": lambda: [
            (p.id, sorted(m.id for m in p.members.all()))
            for p in Project.objects.prefetch_related("members").order_by("id")
        ],
        "fk_access": lambda: [(p.id, p.owner.name) for p in Project.objects.order_by("id")],
        "gets": lambda: (
            [get_or_none(Person, pk) for pk in person_ids]
            + [get_or_none(Project, pk) for pk in project_ids]
            + [get_or_none(Team, pk) for pk in team_ids]
        ),
        "first_last": lambda: (
            getattr(Person.objects.order_by("score", "id").first(), "id", None),
            getattr(Person.objects.order_by("score", "id").last(), "id", None),
        ),
        "slice": lambda: list(
            Person.objects.order_by("-score", "id").values_list("id", **flat)[1:3]
        ),
        "union": lambda: sorted(
            Person.objects.filter(score=1)
            .values_list("id", **flat)
            .union(Person.objects.filter(team__isnull=True).values_list("id", **flat))
        ),
        "mti": lambda: list(
            Milestone.objects.filter(done=False).order_by("id").values_list("id", "title", "due")
        ),
        "proxy": lambda: list(
            ActiveProject.objects.filter(active=True).order_by("id").values_list("id", **flat)
        ),
        "self_ref": lambda: list(
            Person.objects.filter(mentor__team__name="red").order_by("id").values_list("id", **flat)
        ),
        "json_decimal": lambda: list(
            Team.objects.filter(budget__gte=10).order_by("id").values_list("id", "budget", "meta")
        ),
        "in_list": lambda: list(
            Person.objects.filter(id__in=[*person_ids, 10**6])
            .order_by("id")
            .values_list("id", **flat)
        ),
        "by_team_ids": lambda: list(
            Person.objects.filter(team_id__in=team_ids).order_by("id").values_list("id", "team_id")
        ),
        "cached_as_capture": team_summary,
        "cached_as_sample": red_scores,
    }


class FreshnessMachine(RuleBasedStateMachine):
    """Writes of every kind; after each, cached reads must equal the database's answers."""

    counter = 0

    def _name(self) -> str:
        FreshnessMachine.counter += 1
        return f"p{os.getpid()}-{FreshnessMachine.counter}"

    def _pick(self, model: Any, i: int) -> Any:
        pks = list(model.objects.nocache().order_by("id").values_list("id", flat=True))
        return model.objects.nocache().get(pk=pks[i % len(pks)]) if pks else None

    @rule(name=st.sampled_from(TEAMS), budget=st.integers(0, 30))
    def create_team(self, name: str, budget: int) -> None:
        Team.objects.create(name=name, budget=Decimal(budget) / 2, meta={"b": budget})

    @rule(team=st.integers(0, 9), mentor=st.integers(0, 9), score=st.integers(0, 6),
          with_team=st.booleans())  # fmt: skip
    def create_person(self, team: int, mentor: int, score: int, with_team: bool) -> None:
        Person.objects.create(
            name=self._name(),
            team=self._pick(Team, team) if with_team else None,
            mentor=self._pick(Person, mentor),
            score=score,
            joined=dt.datetime(2024, 1, 1 + score, tzinfo=dt.timezone.utc),
        )

    @rule(owner=st.integers(0, 9), milestone=st.booleans(), active=st.booleans())
    def create_project(self, owner: int, milestone: bool, active: bool) -> None:
        person = self._pick(Person, owner)
        if person is None:
            return
        model = Milestone if milestone else Project
        model.objects.create(title=self._name(), owner=person, active=active)

    @rule(i=st.integers(0, 9), team=st.integers(0, 9), score=st.integers(0, 6),
          rename=st.booleans(), mentor=st.integers(0, 9))  # fmt: skip
    def save_person(self, i: int, team: int, score: int, rename: bool, mentor: int) -> None:
        person = self._pick(Person, i)
        if person is None:
            return
        person.team = self._pick(Team, team)
        person.score = score
        person.mentor = self._pick(Person, mentor)
        if rename:
            person.name = self._name()  # a unique key changes
        person.save()

    @rule(i=st.integers(0, 9))
    def delete_team(self, i: int) -> None:
        team = self._pick(Team, i)
        if team is not None:
            team.delete()  # SET_NULL on people

    @rule(i=st.integers(0, 9))
    def delete_person(self, i: int) -> None:
        person = self._pick(Person, i)
        if person is not None:
            person.delete()  # cascades to projects, assignments; SET_NULL on mentees

    @rule(
        i=st.integers(0, 9),
        text=st.sampled_from(["a", "b"]),
        op=st.sampled_from(["add", "remove", "clear", "set"]),
    )
    def labels(self, i: int, text: str, op: str) -> None:
        project = self._pick(Project, i)
        if project is None:
            return
        label = Label.objects.filter(text=text).first() or Label.objects.create(text=text)
        if op == "add":
            project.labels.add(label)
        elif op == "remove":
            project.labels.remove(label)
        elif op == "clear":
            project.labels.clear()
        else:
            project.labels.set([label])

    @rule(i=st.integers(0, 9), j=st.integers(0, 9), role=st.sampled_from(ROLES), add=st.booleans())
    def members(self, i: int, j: int, role: str, add: bool) -> None:
        project, person = self._pick(Project, i), self._pick(Person, j)
        if project is None or person is None:
            return
        if add:
            project.members.add(person, through_defaults={"role": role})
        else:
            Assignment.objects.filter(project=project, person=person).delete()

    @rule(n=st.integers(1, 3), team=st.integers(0, 9))
    def bulk_create(self, n: int, team: int) -> None:
        chosen = self._pick(Team, team)
        Person.objects.bulk_create(
            [Person(name=self._name(), team=chosen, score=k) for k in range(n)]
        )

    @rule(team=st.integers(0, 9), score=st.integers(0, 6))
    def bulk_update(self, team: int, score: int) -> None:
        people = list(Person.objects.nocache().order_by("id")[:3])
        chosen = self._pick(Team, team)
        for person in people:
            person.score, person.team = score, chosen
        Person.objects.bulk_update(people, ["score", "team"])

    @rule(name=st.sampled_from(TEAMS), delta=st.integers(1, 2))
    def queryset_update(self, name: str, delta: int) -> None:
        Person.objects.filter(team__name=name).update(score=F("score") + delta)

    @rule(score=st.integers(0, 6), team=st.integers(0, 9))
    def invalidated_update(self, score: int, team: int) -> None:
        Person.objects.filter(score=score).invalidated_update(team=self._pick(Team, team))

    @rule(active=st.booleans())
    def queryset_delete(self, active: bool) -> None:
        Assignment.objects.filter(role="dev", project__active=active).delete()

    @rule(done=st.booleans(), i=st.integers(0, 9))
    def milestone(self, done: bool, i: int) -> None:
        milestone = self._pick(Milestone, i)
        if milestone is not None:
            milestone.done = done
            milestone.active = not done
            milestone.due = dt.date(2025, 1, 1 + i)
            milestone.save()

    @rule(name=st.sampled_from(TEAMS))
    def raw_write(self, name: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE propapp_person SET score = score + 1 WHERE team_id IN "
                "(SELECT id FROM propapp_team WHERE name = %s)",
                [name],
            )

    @rule(commit=st.booleans(), inner_fails=st.booleans(), i=st.integers(0, 9),
          score=st.integers(0, 6))  # fmt: skip
    def in_transaction(self, commit: bool, inner_fails: bool, i: int, score: int) -> None:
        try:
            with transaction.atomic():
                person = self._pick(Person, i)
                if person is not None:
                    person.score = score
                    person.save()
                try:
                    with transaction.atomic():
                        Team.objects.create(name="red", budget=Decimal(score))
                        if inner_fails:
                            raise RuntimeError("savepoint rollback")
                except RuntimeError:
                    pass
                # reads inside the transaction see its own writes (never the cache)
                assert (
                    Person.objects.filter(score=score).count()
                    == Person.objects.nocache().filter(score=score).count()
                )
                if not commit:
                    raise LookupError("rollback")
        except LookupError:
            pass

    @invariant()
    def cached_reads_equal_the_database(self) -> None:
        STATS["steps"] += 1
        person_ids, project_ids, team_ids = ids(Person), ids(Project), ids(Team)
        queries = pool(person_ids, project_ids, team_ids)
        cached = {name: query() for name, query in queries.items()}
        again = {name: query() for name, query in queries.items()}  # mostly hits now
        with override_settings(FRESHCACHE_ENABLED=False):
            truth = {name: query() for name, query in queries.items()}
        for name in queries:
            STATS["checks"] += 2
            if cached[name] != truth[name] or again[name] != truth[name]:
                STATS["stale"] += 1
            assert cached[name] == truth[name], f"{name}: stale on first read"
            assert again[name] == truth[name], f"{name}: stale on second read"


@pytest.mark.django_db(transaction=True)
def test_cached_reads_always_equal_the_database() -> None:
    run_state_machine_as_test(
        FreshnessMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
    print(
        f"\nfreshness: {STATS['steps']} steps, {STATS['checks']} cached reads checked, "
        f"{STATS['stale']} stale"
    )
    report = os.environ.get("FRESHCACHE_STRESS_REPORT")
    if report:
        import json

        with open(report, "a") as handle:
            config = {
                "db": connection.vendor,
                "backend": os.environ.get("FRESHCACHE_TEST_BACKEND", "locmem"),
            }
            handle.write(json.dumps({"suite": "property", **config, **STATS}) + "\n")
    assert STATS["stale"] == 0
