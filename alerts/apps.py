from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alerting"

    def ready(self) -> None:
        from . import metrics  # noqa: F401  (registers the alerting scrape-time gauges)
        from .live import publish  # noqa: F401  (connects the live board's receivers)
