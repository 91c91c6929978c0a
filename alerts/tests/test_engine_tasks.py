"""The engine's Celery tasks, beat schedule, retention and scrape-time gauges."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import metrics as alert_metrics
from alerts.evaluation.state import apply_samples
from alerts.models import AlertEvent, AlertInstance, Notification, Silence
from alerts.tasks import purge_history, run_tick
from metrics.collectors import REGISTRY

from .engine_helpers import make_channel, make_rule, sample


def test_beat_runs_the_tick_and_the_retention(settings):
    tick = settings.CELERY_BEAT_SCHEDULE["alerts-tick"]
    assert tick == {
        "task": "alerts.tick",
        "schedule": settings.ALERT_TICK_SECONDS,
        "options": {"expires": settings.ALERT_TICK_SECONDS},
    }
    assert settings.CELERY_BEAT_SCHEDULE["alerts-purge-history"]["task"] == "alerts.purge_history"
    from traversion_site.celery import app

    for name in (
        "alerts.tick",
        "alerts.evaluate_rules",
        "alerts.evaluate_rule",
        "alerts.purge_history",
    ):
        assert name in app.tasks


@pytest.mark.django_db(transaction=True)
def test_the_tick_sends_thin_tasks_with_ids_and_an_expiry(
    tenant_a, tenant_b, celery_on_redis, redis_url
):
    import redis

    now = timezone.now()
    a = make_rule(tenant_a, name="a", query="SELECT 1 AS value", evaluation_interval=30_000)
    b = make_rule(tenant_b, name="b", query="SELECT 1 AS value", evaluation_interval=30_000)
    run_tick(now)

    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
    client.close()
    sent = sorted(
        (m["headers"]["task"], m["headers"]["argsrepr"], m["headers"]["expires"]) for m in messages
    )
    expires = (now + timedelta(seconds=30)).isoformat()
    assert sent == sorted(
        [
            ("alerts.evaluate_rules", repr([tenant_a.pk, [a.pk]]), expires),
            ("alerts.evaluate_rules", repr([tenant_b.pk, [b.pk]]), expires),
        ]
    )


@pytest.mark.django_db
def test_retention_deletes_old_history_and_forgotten_instances_only(tenant_a, settings):
    settings.ALERT_HISTORY_RETENTION_DAYS = 90
    now = timezone.now()
    old, recent = now - timedelta(days=91), now - timedelta(days=89)
    rule = make_rule(tenant_a, [make_channel(tenant_a)], condition_operator="", threshold=None)
    apply_samples(rule, [sample(None, host="gone")], now=old)
    apply_samples(
        rule, [sample(None, host="kept")], now=old + timedelta(minutes=1)
    )  # gone resolves
    apply_samples(rule, [], now=recent)  # kept resolves, recently
    assert AlertEvent.objects.count() == 4
    assert Notification.objects.count() == 4

    deleted = purge_history(now)

    assert deleted == {"events": 3, "instances": 1}
    assert list(AlertInstance.objects.values_list("labels__host", "state")) == [
        ("kept", "resolved")
    ]
    assert list(AlertEvent.objects.values_list("kind", "timestamp")) == [("resolved", recent)]
    assert Notification.objects.count() == 1
    assert purge_history(now) == {"events": 0, "instances": 0}


@pytest.mark.django_db
def test_scrape_gauges_count_rules_active_alerts_and_silences(tenant_a, tenant_b):
    a = str(tenant_a.pk)
    make_rule(tenant_a, name="r1", severity="critical", runbook_url="https://x.example/r")
    make_rule(
        tenant_a, name="r2", severity="critical", runbook_url="https://x.example/r", enabled=False
    )
    make_rule(tenant_b, name="r3")
    global_rule = make_rule(None, name="g", condition_operator="", threshold=None)
    apply_samples(
        global_rule,
        [
            sample(None, tenant_id=tenant_a.pk, host="x"),
            sample(None, tenant_id=tenant_a.pk, host="y"),
        ],
    )
    now = timezone.now()
    Silence.objects.create(tenant=tenant_a, matchers=[], ends_at=now + timedelta(hours=1))
    Silence.objects.create(tenant=None, matchers=[], ends_at=now + timedelta(hours=1))
    Silence.objects.create(
        tenant=tenant_b,
        matchers=[],
        starts_at=now - timedelta(hours=2),
        ends_at=now - timedelta(hours=1),
    )

    assert sorted(alert_metrics.alert_rules()) == sorted(
        [
            ((a, "critical", "true"), 1),
            ((a, "critical", "false"), 1),
            ((str(tenant_b.pk), "warning", "true"), 1),
            (("", "warning", "true"), 1),
        ]
    )
    assert alert_metrics.alerts_active() == [((a, "warning", "firing"), 2)]
    assert sorted(alert_metrics.silences_active()) == [(("",), 1), ((a,), 1)]
    for name in (
        "traversion_alert_rules",
        "traversion_alerts_active",
        "traversion_alert_silences_active",
    ):
        assert name in REGISTRY
    assert REGISTRY["traversion_alerts_active"].labels == ("tenant_id", "severity", "state")
