"""HTTP routes of the live board, mounted at /alerts/live/."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.board, name="alerts-live"),
    path("snapshot.json", views.snapshot, name="alerts-live-snapshot"),
    path("login/", views.BoardLoginView.as_view(), name="alerts-live-login"),
    path("logout/", views.BoardLogoutView.as_view(), name="alerts-live-logout"),
]
