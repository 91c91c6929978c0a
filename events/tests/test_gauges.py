"""Scrape-time gauges: storage totals, last event, graph size, anomaly score."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import generate_latest

from events.causality.anomaly import BASELINE_MINUTES, anomaly_scores
from events.causality.outbox import process_batch
from events.ingest import ingest
from events.metrics import usage_rows
from events.models import CausalityBatch, CausalLink, Event
from metrics.collectors import REGISTRY
from metrics.exposition import scrape_registry

from .conftest import label

pytestmark = pytest.mark.django_db

FAMILIES = {
    "traversion_storage_events_count": ("tenant_id",),
    "traversion_last_event_timestamp": ("tenant_id",),
    "traversion_event_anomaly_score": ("tenant_id", "service_id"),
    "traversion_causality_graph_size": ("tenant_id",),
    "traversion_storage_size_bytes": ("tenant_id",),
    "traversion_tenant_storage_usage_bytes": ("tenant_id",),
}


@pytest.fixture(autouse=True)
def fresh_gauges(settings):
    settings.METRICS_COLLECTION_INTERVAL = 0
    usage_rows.cache_clear()


def gauge(name: str) -> dict[tuple[str, ...], float]:
    return dict(REGISTRY[name].samples(now=float("inf")))


def test_families_are_registered_with_their_labels():
    for name, labels in FAMILIES.items():
        assert REGISTRY[name].labels == labels
        assert REGISTRY[name].cached


def test_storage_gauges_follow_ingestion_and_links(tenant_a, tenant_b):
    now = timezone.now().replace(microsecond=0)
    newest = now - timedelta(seconds=5)
    items = [
        {
            "service_id": "api",
            "event_type": "deploy",
            "timestamp": (now - timedelta(seconds=60)).isoformat(),
        },
        {
            "service_id": "api",
            "event_type": "error",
            "timestamp": (now - timedelta(seconds=30)).isoformat(),
        },
        {"service_id": "api", "event_type": "alert", "timestamp": newest.isoformat()},
    ]
    ingest(tenant_a, items, enqueue=lambda _: None)
    ingest(tenant_b, items[:1], enqueue=lambda _: None)
    for batch in CausalityBatch.objects.all():
        process_batch(batch.pk)
    a, b = (label(tenant_a),), (label(tenant_b),)
    bytes_a = sum(Event.objects.filter(tenant=tenant_a).values_list("size_bytes", flat=True))

    assert gauge("traversion_storage_events_count") == {a: 3, b: 1}
    assert gauge("traversion_last_event_timestamp")[a] == newest.timestamp()
    assert gauge("traversion_causality_graph_size") == {
        a: CausalLink.objects.filter(tenant=tenant_a).count(),
        b: 0,
    }
    assert gauge("traversion_causality_graph_size")[a] >= 2
    assert gauge("traversion_tenant_storage_usage_bytes")[a] == bytes_a
    size = gauge("traversion_storage_size_bytes")
    # PostgreSQL: the tables' real size shared in proportion to the charged bytes.
    assert size[a] > size[b] > 0
    assert size[a] / size[b] == pytest.approx(
        bytes_a / gauge("traversion_tenant_storage_usage_bytes")[b]
    )

    # And through the scrape itself.
    text = generate_latest(scrape_registry()).decode()
    assert f'traversion_storage_events_count{{tenant_id="{a[0]}"}} 3.0' in text


def test_anomaly_score_is_a_z_score_against_the_baseline(tenant_a, tenant_b):
    now = timezone.now()
    current = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    start = current - timedelta(minutes=BASELINE_MINUTES)

    def errors(tenant, service, minute_start, count, **extra):
        items = [
            {
                "service_id": service,
                "event_type": extra.get("event_type", "log"),
                "severity": extra.get("severity", "error"),
                "timestamp": (minute_start + timedelta(seconds=1 + i)).isoformat(),
            }
            for i in range(count)
        ]
        if items:
            ingest(tenant, items, enqueue=lambda _: None)

    # api: one error every baseline minute (flat: stdev floored to 1), 11 now -> z = 10.
    for i in range(BASELINE_MINUTES):
        errors(tenant_a, "api", start + timedelta(minutes=i), 1)
    errors(tenant_a, "api", current, 11)
    # db: 0, 2, 0, 2, ... (mean 1, stdev 1), 4 exceptions now -> z = 3.
    for i in range(BASELINE_MINUTES):
        errors(
            tenant_a,
            "db",
            start + timedelta(minutes=i),
            2 * (i % 2),
            event_type="exception",
            severity="info",
        )
    errors(tenant_a, "db", current, 4, event_type="exception", severity="info")
    # Info logs do not count; tenant B's errors are its own series.
    errors(tenant_a, "web", current, 50, severity="info")
    for i in range(0, BASELINE_MINUTES, 3):
        errors(tenant_b, "api", start + timedelta(minutes=i), 3)
    # The minute in progress is not judged yet.
    errors(tenant_a, "api", current + timedelta(minutes=1), 5)

    scores = dict(anomaly_scores(now))
    a, b = label(tenant_a), label(tenant_b)
    assert set(scores) == {(a, "api"), (a, "db"), (b, "api")}
    assert scores[(a, "api")] == pytest.approx(10.0)
    assert scores[(a, "db")] == pytest.approx(3.0)
    # B: 3 errors in every third minute, none now: below its baseline.
    mean = 3 * 10 / BASELINE_MINUTES
    stdev = math.sqrt((10 * (3 - mean) ** 2 + 20 * mean**2) / BASELINE_MINUTES)
    assert scores[(b, "api")] == pytest.approx(-mean / max(stdev, 1.0))
    assert gauge("traversion_event_anomaly_score")[(a, "api")] == pytest.approx(10.0)
