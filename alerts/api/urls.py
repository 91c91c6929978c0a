"""Routes of the alerting API (DESIGN §API surface; a public contract).

`urlpatterns` go under /api/v1/; `internal_urlpatterns` under /api/internal/ (the guide's
test call); `receiver_urlpatterns` at the root (/api/v2/alerts, /webhook/alerts, the
paths Prometheus and Alertmanager post to). Action routes take an optional trailing
slash, as runbooks write them both ways.
"""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import schema  # noqa: F401  (registers the OpenAPI authentication schemes)
from .views import (
    AlertEventViewSet,
    AlertInstanceViewSet,
    AlertmanagerV2AlertsView,
    AlertmanagerWebhookView,
    AlertRuleViewSet,
    AlertTestView,
    NotificationChannelViewSet,
    NotificationViewSet,
    SilenceViewSet,
)


class OptionalSlashRouter(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("rules", AlertRuleViewSet, basename="alert-rule")
router.register("instances", AlertInstanceViewSet, basename="alert-instance")
router.register("history", AlertEventViewSet, basename="alert-event")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("silences", SilenceViewSet, basename="silence")
router.register("channels", NotificationChannelViewSet, basename="channel")

urlpatterns = router.urls

internal_urlpatterns = [
    path("alerts/test", AlertTestView.as_view(), name="alert-test"),
]

receiver_urlpatterns = [
    path("api/v2/alerts", AlertmanagerV2AlertsView.as_view(), name="alertmanager-v2-alerts"),
    path("webhook/alerts", AlertmanagerWebhookView.as_view(), name="alertmanager-webhook"),
]
