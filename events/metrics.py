"""Scrape-time gauges of the events app (database-backed, cached between scrapes).

The per-tenant totals come from the EventUsage rows, one small table read once per
METRICS_COLLECTION_INTERVAL for all five families, never from a COUNT over the events.
Label `tenant_id` is spelled by `metrics.labels.tenant_label`, like every other family.
"""

from __future__ import annotations

from django.db import connection

from metrics.collectors import interval_cached, scrape_gauge
from metrics.labels import tenant_label

from .causality.anomaly import anomaly_scores
from .models import CausalLink, Event, EventUsage


@interval_cached
def usage_rows() -> list[tuple[str, EventUsage]]:
    """(tenant label, usage row) of every tenant that ever stored an event."""
    return [(tenant_label(row.tenant), row) for row in EventUsage.objects.select_related("tenant")]


@scrape_gauge("traversion_storage_events_count", "Events stored, by tenant.", ["tenant_id"])
def storage_events_count():
    return [((label,), row.events_count) for label, row in usage_rows()]


@scrape_gauge(
    "traversion_last_event_timestamp",
    "Unix time of the newest event stored (its own timestamp), by tenant.",
    ["tenant_id"],
)
def last_event_timestamp():
    return [
        ((label,), row.last_event_at.timestamp())
        for label, row in usage_rows()
        if row.last_event_at
    ]


@scrape_gauge(
    "traversion_causality_graph_size",
    "Causal links stored (edges of the causality graph), by tenant.",
    ["tenant_id"],
)
def causality_graph_size():
    return [((label,), row.links_count) for label, row in usage_rows()]


@scrape_gauge(
    "traversion_tenant_storage_usage_bytes",
    "Bytes of events charged against the tenant's storage quota.",
    ["tenant_id"],
)
def tenant_storage_usage_bytes():
    return [((label,), row.bytes_used) for label, row in usage_rows()]


def events_relation_bytes() -> int | None:
    """On-disk bytes of the event and link tables with their indexes (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_total_relation_size(%s) + pg_total_relation_size(%s)",
            [Event._meta.db_table, CausalLink._meta.db_table],
        )
        return int(cursor.fetchone()[0])


@scrape_gauge(
    "traversion_storage_size_bytes",
    "Estimated on-disk size of the tenant's events and links: the tables with their "
    "indexes, apportioned by charged bytes (the charged bytes where the database cannot tell).",
    ["tenant_id"],
)
def storage_size_bytes():
    usage = [(label, row.bytes_used) for label, row in usage_rows()]
    total_charged = sum(used for _, used in usage)
    on_disk = events_relation_bytes()
    if on_disk is None or total_charged <= 0:
        return [((label,), used) for label, used in usage]
    return [((label,), on_disk * used / total_charged) for label, used in usage]


@scrape_gauge(
    "traversion_event_anomaly_score",
    "z-score of the last complete minute's error count against the 30 minutes before it.",
    ["tenant_id", "service_id"],
)
def event_anomaly_score():
    return anomaly_scores()
