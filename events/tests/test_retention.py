"""Retention deletes only events older than EVENT_RETENTION_DAYS, in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F, Sum
from django.utils import timezone

from events.causality.outbox import process_batch
from events.models import CausalityBatch, CausalLink, Event, EventUsage
from events.retention import enforce_retention

from .conftest import event

pytestmark = pytest.mark.django_db


@pytest.fixture
def aged(tenant_a, tenant_b, api_key_for, post_events, settings):
    """Per tenant: 5 events aged 40 days (linked among themselves) and 4 recent ones."""
    settings.EVENT_RETENTION_DAYS = 30
    now = timezone.now()
    ids = {}
    for tenant in (tenant_a, tenant_b):
        items = [event("api", "deploy", now - timedelta(minutes=10))]
        items += [event("api", "error", now - timedelta(minutes=9, seconds=-i)) for i in range(8)]
        response = post_events(api_key_for(tenant), items)
        assert response.status_code == 201
        ids[tenant.slug] = response.json()["ids"]
    for batch in CausalityBatch.objects.all():
        process_batch(batch.pk)
    # Age the first five events of each tenant (the deploy and four errors) by 40 days.
    for tenant_ids in ids.values():
        Event.objects.filter(pk__in=tenant_ids[:5]).update(
            timestamp=F("timestamp") - timedelta(days=40)
        )
    return ids


def test_only_old_events_are_deleted_in_batches(aged, tenant_a, tenant_b, settings):
    links_before = CausalLink.objects.count()
    assert links_before > 0
    deleted = enforce_retention(batch_size=2)
    assert deleted == 10
    remaining = set(Event.objects.values_list("pk", flat=True))
    assert remaining == set(aged["alpha"][5:]) | set(aged["beta"][5:])
    assert not Event.objects.filter(timestamp__lt=timezone.now() - timedelta(days=30)).exists()
    # Links touching a deleted event went with it; links among survivors stayed.
    assert not CausalLink.objects.exclude(cause_id__in=remaining).exists()
    assert not CausalLink.objects.exclude(effect_id__in=remaining).exists()
    assert CausalLink.objects.exists()
    # Usage totals are exactly what is left.
    for tenant in (tenant_a, tenant_b):
        usage = EventUsage.objects.get(tenant=tenant)
        events = Event.objects.filter(tenant=tenant)
        assert usage.events_count == events.count() == 4
        assert usage.bytes_used == events.aggregate(total=Sum("size_bytes"))["total"]
        assert usage.links_count == CausalLink.objects.filter(tenant=tenant).count()
    # Nothing more to do on a second run.
    assert enforce_retention() == 0


def test_retention_period_comes_from_the_setting(aged, settings):
    settings.EVENT_RETENTION_DAYS = 45
    assert enforce_retention() == 0
    settings.EVENT_RETENTION_DAYS = 39
    assert enforce_retention() == 10


def test_retention_task_is_scheduled(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["events-retention"]
    assert entry["task"] == "events.enforce_retention"
    from traversion_site.celery import app

    app.loader.import_default_modules()  # runs the tasks.py autodiscovery
    assert {"events.enforce_retention", "events.sweep_causality_batches"} <= set(app.tasks)
    assert settings.CELERY_BEAT_SCHEDULE["events-causality-sweep"]["task"] == (
        "events.sweep_causality_batches"
    )


def test_recompute_event_usage_repairs_the_totals(aged, tenant_a, tenant_b):
    from django.core.management import call_command

    expected = {
        t.pk: (
            Event.objects.filter(tenant=t).count(),
            Event.objects.filter(tenant=t).aggregate(total=Sum("size_bytes"))["total"],
            CausalLink.objects.filter(tenant=t).count(),
        )
        for t in (tenant_a, tenant_b)
    }
    EventUsage.objects.update(events_count=0, bytes_used=7, links_count=99)
    call_command("recompute_event_usage")
    for usage in EventUsage.objects.all():
        assert (usage.events_count, usage.bytes_used, usage.links_count) == expected[
            usage.tenant_id
        ]
