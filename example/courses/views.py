"""The seed's CourseListView, without a single cache.get/set: the ORM reads are cached and
invalidated by freshcache, and the querysets stay lazy and filterable."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views import View

from courses.models import Course, Subject


class CourseListView(View):
    def get(self, request: HttpRequest, subject: str | None = None) -> HttpResponse:
        subjects = Subject.objects.annotate(total_courses=Count("courses"))
        courses = Course.objects.annotate(total_modules=Count("modules"))
        chosen = None
        if subject:
            chosen = get_object_or_404(Subject, slug=subject)
            courses = courses.filter(subject=chosen)
        context: dict[str, Any] = {"subjects": subjects, "subject": chosen, "courses": courses}
        return render(request, "courses/list.html", context)


def course_detail(request: HttpRequest, slug: str) -> HttpResponse:
    course = get_object_or_404(Course.objects.select_related("subject"), slug=slug)
    return render(
        request, "courses/detail.html", {"course": course, "modules": course.modules.all()}
    )


def stats(request: HttpRequest) -> HttpResponse:
    text = (
        f"subjects={Subject.objects.count()} courses={Course.objects.count()} "
        f"modules={Course.objects.aggregate(n=Count('modules'))['n']}"
    )
    return HttpResponse(text, content_type="text/plain")
