"""``manage.py demo``: drive the site with the cache off and on, then show writes invalidating
exactly the pages they should, each page checked against the database."""

from __future__ import annotations

import statistics
import time
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from django.test import Client, override_settings

from courses.models import Course, Module, Subject
from freshcache import invalidate_all

REQUESTS = 30


class CountQueries:
    """Counts the statements the default connection executes inside the block.

    An execute wrapper rather than ``connection.queries``: the test client's request signals
    reset and reopen the connection between requests, which confuses the query log.
    """

    def __enter__(self) -> CountQueries:
        self.count = 0
        connection.execute_wrappers.append(self)
        return self

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)

    def __exit__(self, *exc: object) -> None:
        connection.execute_wrappers.remove(self)


def seed() -> None:
    """The same catalogue on every run, so the writes below always mean the same thing."""
    Subject.objects.all().delete()
    for s in range(6):
        subject = Subject.objects.create(title=f"Subject {s}", slug=f"subject-{s}")
        for c in range(8):
            course = Course.objects.create(
                subject=subject, title=f"Course {s}.{c}", slug=f"course-{s}-{c}"
            )
            Module.objects.bulk_create(
                Module(course=course, title=f"Module {m}", order=m) for m in range(6)
            )


class Command(BaseCommand):
    help = "Run the example workload with the cache off and on, and show invalidation at work."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        seed()
        self.client = Client()
        pages = [
            "/",
            "/subject/subject-0/",
            "/subject/subject-1/",
            "/course/course-0-0/",
            "/course/course-1-3/",
            "/stats/",
        ]
        invalidate_all()
        self.out(
            f"freshcache demo: SQLite + the in-process backend, {REQUESTS} requests per page\n"
        )
        self.out(
            f"{'page':24} {'queries off':>11} {'queries on':>10} "
            f"{'ms off':>8} {'ms on':>8} {'speed-up':>8}"
        )
        for page in pages:
            with override_settings(FRESHCACHE_ENABLED=False):
                q_off, t_off = self.measure(page)
            self.client.get(page)  # warm the cache
            q_on, t_on = self.measure(page)
            self.out(
                f"{page:24} {q_off:11.1f} {q_on:10.1f} {t_off:8.2f} {t_on:8.2f} "
                f"{t_off / t_on:7.1f}x"
            )
        self.write_and_check(
            "add a module to Course 0.0",
            lambda: Module.objects.create(
                course=Course.objects.get(slug="course-0-0"), title="New module", order=99
            ),
            pages,
        )
        self.write_and_check(
            "rename Course 1.3",
            lambda: Course.objects.filter(slug="course-1-3").update(title="Course 1.3 (new)"),
            pages,
        )
        self.write_and_check(
            "move Course 0.1 to Subject 1",
            self.move_course,
            pages,
        )

    def move_course(self) -> None:
        course = Course.objects.get(slug="course-0-1")
        course.subject = Subject.objects.get(slug="subject-1")
        course.save()

    def measure(self, page: str) -> tuple[float, float]:
        counts, times = [], []
        for _ in range(REQUESTS):
            with CountQueries() as counter:
                start = time.perf_counter()
                response = self.client.get(page)
                times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (page, response.status_code)
            counts.append(counter.count)
        return statistics.mean(counts), statistics.median(times)

    def write_and_check(self, what: str, write: Any, pages: list[str]) -> None:
        for page in pages:
            self.client.get(page)  # everything cached
        write()
        self.out(f"\nafter: {what}")
        self.out(f"{'page':24} {'queries':>7}  {'result':<10} fresh")
        for page in pages:
            with CountQueries() as counter:
                cached = self.client.get(page).content
            with override_settings(FRESHCACHE_ENABLED=False):
                truth = self.client.get(page).content
            n = counter.count
            state = "served" if n == 0 else "refreshed"
            fresh = "yes" if cached == truth else "NO - STALE"
            self.out(f"{page:24} {n:7d}  {state:<10} {fresh}")
            if cached != truth:
                raise SystemExit(f"stale page {page} after {what}")

    def out(self, text: str) -> None:
        self.stdout.write(text)
