"""How the engine's events become ledger rows (alerts.dispatch), as the engine uses it."""

from __future__ import annotations

import pytest

from alerts.evaluation.state import apply_samples, record_error
from alerts.models import AlertEvent, Notification

from .engine_helpers import at, history, ledger, make_channel, make_rule, sample

pytestmark = pytest.mark.django_db


def test_history_only_transitions_write_no_ledger_rows(tenant_a):
    rule = make_rule(
        tenant_a,
        [make_channel(tenant_a), make_channel(tenant_a, name="pd", type="pagerduty")],
        for_duration=60_000,
    )
    apply_samples(rule, [sample(20)], now=at(0))  # pending
    apply_samples(rule, [sample(1)], now=at(10))  # back to inactive
    record_error(rule, "boom", now=at(20))  # the rule's own error
    assert [h[0] for h in history(rule)] == ["state", "state", "state"]
    assert ledger(rule) == []


def test_every_instance_of_one_evaluation_lands_in_one_group_per_channel(tenant_a):
    hook = make_channel(tenant_a)
    pd = make_channel(tenant_a, name="pd", type="pagerduty")
    rule = make_rule(tenant_a, [hook, pd], condition_operator="", threshold=None)
    storm = [sample(None, host=f"web-{i:03d}") for i in range(300)]

    events = apply_samples(rule, storm, now=at(0))

    assert len(events) == 300
    rows = Notification.objects.filter(event__rule=rule)
    assert rows.count() == 600  # every instance keeps its own ledger row per channel
    assert set(rows.values_list("status", flat=True)) == {"queued"}
    groups = set(rows.values_list("channel__name", "group_key"))
    # One group per channel: the delivery task sends each as one message.
    assert {name for name, _ in groups} == {"hook", "pd"}
    assert len(groups) == 2


def test_dispatch_decides_at_the_events_time(tenant_a):
    """Cooldown is measured between event times, so simulated time is consistent."""
    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=120_000)
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(1)], now=at(30))
    apply_samples(rule, [sample(20)], now=at(200))  # 200 s after the page: past the cooldown
    assert ledger(rule) == [
        ("firing", "queued", "hook"),
        ("resolved", "queued", "hook"),
        ("firing", "queued", "hook"),
    ]
    firing = AlertEvent.objects.filter(rule=rule, kind="firing").order_by("timestamp").last()
    assert firing.instance.last_notified_at == at(200)


def test_suppressed_notifications_are_counted(tenant_a):
    from prometheus_client import REGISTRY

    def suppressed() -> float:
        labels = {"channel_type": "webhook", "result": "suppressed"}
        return REGISTRY.get_sample_value("traversion_alert_notifications_total", labels) or 0.0

    rule = make_rule(tenant_a, [make_channel(tenant_a)], cooldown=120_000)
    before = suppressed()
    apply_samples(rule, [sample(20)], now=at(0))
    apply_samples(rule, [sample(1)], now=at(30))
    apply_samples(rule, [sample(20)], now=at(60))  # a new firing within the cooldown
    assert ledger(rule) == [
        ("firing", "queued", "hook"),
        ("resolved", "queued", "hook"),
        ("firing", "suppressed_cooldown", "hook"),
    ]
    assert suppressed() - before == 1
