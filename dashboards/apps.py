from __future__ import annotations

from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    """Grafana dashboards (JSON under grafana/), pushing them to Grafana, traffic generation."""

    name = "dashboards"
    verbose_name = "Dashboards"
