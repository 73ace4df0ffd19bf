from __future__ import annotations

from django.contrib import admin
from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("write-then-read/<int:category_id>/", views.write_then_read),
    path("whoami/", views.whoami),
]
