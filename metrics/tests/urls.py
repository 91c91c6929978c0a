"""The project's URLs plus a view that fails, for the middleware tests."""

from __future__ import annotations

from django.urls import include, path


def boom(request):
    raise RuntimeError("this view fails on purpose")


urlpatterns = [
    path("boom/<int:n>/", boom),
    path("", include("traversion_site.urls")),
]
