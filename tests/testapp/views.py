from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from tests.testapp.models import Post


def write_then_read(request: HttpRequest, category_id: int) -> HttpResponse:
    Post.objects.filter(category_id=category_id).update(title="renamed")
    titles = [p.title for p in Post.objects.filter(category_id=category_id)]
    return HttpResponse(",".join(titles))


def whoami(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.user.get_username() if request.user.is_authenticated else "-")
