"""Events routes. No trailing slash: `/api/v1/events`, `/api/v1/events/{id}/root-cause`."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import EventViewSet

router = SimpleRouter(trailing_slash="")
router.register("events", EventViewSet, basename="event")

urlpatterns = router.urls
