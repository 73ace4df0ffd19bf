from __future__ import annotations

from django.urls import path

from courses import views

urlpatterns = [
    path("", views.CourseListView.as_view(), name="course_list"),
    path("subject/<slug:subject>/", views.CourseListView.as_view(), name="course_list_subject"),
    path("course/<slug:slug>/", views.course_detail, name="course_detail"),
    path("stats/", views.stats, name="stats"),
]
