"""Scrape-time gauges of the alerting app (imported from AlertsConfig.ready()).

`tenant_id` is spelled as every other family spells it (metrics.labels.tenant_label:
the tenant's id as text, empty for global rows). The counters of evaluations live in
metrics.catalogue and are fed by alerts.evaluation.runner.
"""

from __future__ import annotations

from django.db.models import Count

from metrics.collectors import scrape_gauge
from metrics.labels import tenant_label

from .choices import InstanceState


@scrape_gauge(
    "traversion_alert_rules",
    "Alert rules by tenant, severity and enabled flag.",
    ["tenant_id", "severity", "enabled"],
)
def alert_rules():
    from .models import AlertRule

    rows = (
        AlertRule.objects.order_by()
        .values("tenant_id", "severity", "enabled")
        .annotate(count=Count("pk"))
    )
    return [
        (
            (tenant_label(row["tenant_id"]), row["severity"], str(row["enabled"]).lower()),
            row["count"],
        )
        for row in rows
    ]


@scrape_gauge(
    "traversion_alerts_active",
    "Alert instances that are not inactive or resolved, by tenant, rule severity and state.",
    ["tenant_id", "severity", "state"],
)
def alerts_active():
    from .models import AlertInstance

    rows = (
        AlertInstance.objects.order_by()
        .exclude(state__in=(InstanceState.INACTIVE, InstanceState.RESOLVED))
        .values("tenant_id", "rule__severity", "state")
        .annotate(count=Count("pk"))
    )
    return [
        ((tenant_label(row["tenant_id"]), row["rule__severity"], row["state"]), row["count"])
        for row in rows
    ]


@scrape_gauge(
    "traversion_alert_silences_active",
    "Silences in effect now, by tenant.",
    ["tenant_id"],
)
def silences_active():
    from .models import Silence

    rows = Silence.objects.active().order_by().values("tenant_id").annotate(count=Count("pk"))
    return [((tenant_label(row["tenant_id"]),), row["count"]) for row in rows]
