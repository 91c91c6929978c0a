from __future__ import annotations

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events and causality"

    def ready(self) -> None:
        from . import metrics  # noqa: F401  (registers the scrape-time gauges)
