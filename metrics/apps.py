from __future__ import annotations

from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from . import catalogue

        if not catalogue.ENABLED:
            # ENABLE_METRICS=false: no wrapper, no signal receiver, no scrape gauge.
            return
        # Scrape-time gauges register themselves on import.
        from . import celery_signals, queues, security, storage, system  # noqa: F401

        storage.connect_signals()
        celery_signals.connect()
        # django-prometheus's HTTP families exist once per process, as HttpMetrics (with
        # its left-out families), whoever asks django-prometheus for them first.
        from .middleware import HttpMetrics

        HttpMetrics.get_instance()
