"""Both insert paths (COPY on PostgreSQL, bulk_create elsewhere) store the same rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.ingest import validate_event
from events.models import Event
from events.storage import insert_events

pytestmark = pytest.mark.django_db

FIELDS = (
    "tenant_id",
    "timestamp",
    "service_id",
    "event_type",
    "severity",
    "message",
    "attributes",
    "correlation_id",
    "trace_id",
    "ingested_at",
    "size_bytes",
)


def rows(now):
    items = [
        {
            "service_id": "api",
            "event_type": "deploy",
            "message": "tab\there, newline\nthere, backslash \\ and «quotes»",
            "attributes": {"nested": {"list": [1, 2.5, None, True]}, "text": 'a\\nb\t"q"'},
            "correlation_id": "c-1",
            "timestamp": (now - timedelta(seconds=3)).isoformat(),
        },
        {"service_id": "db", "event_type": "error", "severity": "critical"},
    ]
    cleaned = [validate_event(item, now, now - timedelta(days=1)) for item in items]
    assert all(not errors for _, errors in cleaned)
    return [clean for clean, _ in cleaned]


@pytest.mark.parametrize("copy", [True, False])
def test_insert_paths_store_identical_rows(tenant_a, copy):
    if copy:
        from conftest import require_postgresql

        require_postgresql("COPY is the PostgreSQL path")
    now = timezone.now()
    ids = insert_events(tenant_a, rows(now), now, copy=copy)
    assert len(ids) == 2 and ids == sorted(ids)
    stored = [Event.objects.values(*FIELDS).get(pk=pk) for pk in ids]
    expected = rows(now)
    for got, want in zip(stored, expected, strict=True):
        assert got["tenant_id"] == tenant_a.pk and got["ingested_at"] == now
        for field in FIELDS[1:-2]:
            assert got[field] == want[field], field
        assert got["size_bytes"] == want["size_bytes"]
    # The sequence moves on: the next insert gets new, higher ids.
    assert min(insert_events(tenant_a, rows(now), now, copy=copy)) > max(ids)
