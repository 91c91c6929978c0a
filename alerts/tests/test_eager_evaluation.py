"""Rules reading `events` are sent to the worker as soon as a tenant's events are stored."""

from __future__ import annotations

import ast
import json

import pytest
import redis
from django.core.cache import cache

from alerts.eager import LEADING_KEY, TRAILING_KEY, events_stored, rules_reading_events
from alerts.tasks import EVALUATE_RULE_TASK
from alerts.tests.engine_helpers import make_rule
from events.ingest import ingest

pytestmark = pytest.mark.django_db


def queued(redis_url: str) -> list[tuple[str, list]]:
    """(task name, args) of the messages waiting on the test's Redis queue, oldest first."""
    client = redis.Redis.from_url(redis_url)
    try:
        messages = [json.loads(raw) for raw in reversed(client.lrange("celery", 0, -1))]
    finally:
        client.close()
    return [(m["headers"]["task"], ast.literal_eval(m["headers"]["argsrepr"])) for m in messages]


@pytest.fixture
def rules(tenant_a, tenant_b):
    reading = make_rule(tenant_a, name="errors", query="SELECT count(*) AS value FROM events")
    grouped = make_rule(
        tenant_a,
        name="per_service",
        query="SELECT service_id, count(*) AS value FROM events e GROUP BY service_id",
    )
    make_rule(tenant_a, name="audit", query="SELECT count(*) AS value FROM audit_log")
    make_rule(
        tenant_a,
        name="literal",
        query="SELECT count(*) AS value FROM audit_log WHERE action = 'events'",
    )
    make_rule(tenant_a, name="off", query="SELECT count(*) AS value FROM events", enabled=False)
    make_rule(tenant_b, name="other", query="SELECT count(*) AS value FROM events")
    global_rule = make_rule(
        None, name="global", query="SELECT tenant_id, count(*) AS value FROM events GROUP BY 1"
    )
    ids = [reading.pk, grouped.pk, global_rule.pk]
    cache.delete_many([k.format(rule_id=i) for i in ids for k in (LEADING_KEY, TRAILING_KEY)])
    return ids


def test_only_enabled_rules_of_the_tenant_reading_events(tenant_a, rules):
    assert sorted(rules_reading_events(tenant_a.pk)) == sorted(rules)


def test_debounced_per_rule(tenant_a, rules, celery_on_redis, redis_url, settings):
    settings.ALERT_EAGER_DEBOUNCE_SECONDS = 30
    # Leading edge: each rule at once; trailing edge: once more for the rest of the window.
    assert events_stored(tenant_a.pk) == 3
    assert events_stored(tenant_a.pk) == 3
    assert events_stored(tenant_a.pk) == 0
    sent = queued(redis_url)
    assert sorted(args[0] for _, args in sent) == sorted(rules * 2)
    assert {name for name, _ in sent} == {EVALUATE_RULE_TASK}


def test_disabled_by_setting(tenant_a, rules, celery_on_redis, redis_url, settings):
    settings.ALERT_EAGER_EVALUATION = False
    assert events_stored(tenant_a.pk) == 0
    assert queued(redis_url) == []


def test_ingestion_sends_the_rules_after_commit(
    tenant_a, rules, celery_on_redis, redis_url, django_capture_on_commit_callbacks
):
    batches = []
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ingest(
            tenant_a,
            {"service_id": "api", "event_type": "error", "message": "boom"},
            enqueue=batches.append,
        )
        assert queued(redis_url) == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert len(batches) == 1
    assert sorted(args[0] for _, args in queued(redis_url)) == sorted(rules)
