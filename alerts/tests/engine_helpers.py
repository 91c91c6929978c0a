"""Helpers for the alert engine's tests: rules, channels, and history/ledger snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from alerts.evaluation.base import Sample
from alerts.models import AlertEvent, AlertRule, Notification, NotificationChannel

#: A fixed start for simulated evaluations (seconds added with `at()`).
T0 = timezone.now().replace(microsecond=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_channel(tenant=None, name: str = "hook", type: str = "webhook", **extra):
    config = {
        "webhook": {"url": "http://127.0.0.1:9/hook"},
        "pagerduty": {"routing_key": "R" * 32, "api_url": "http://127.0.0.1:9/pd"},
        "slack": {"webhook_url": "http://127.0.0.1:9/slack"},
        "email": {"to": ["ops@example.com"]},
    }[type]
    return NotificationChannel.objects.create(
        tenant=tenant, name=name, type=type, config=config, **extra
    )


def make_rule(tenant=None, channels=(), **fields) -> AlertRule:
    defaults = {
        "name": "errors_high",
        "severity": "warning",
        "datasource": "sql",
        "query": "SELECT count(*) AS value FROM audit_log",
        "condition_operator": ">",
        "threshold": 10,
        "cooldown": 60_000,
    }
    rule = AlertRule.objects.create(tenant=tenant, **{**defaults, **fields})
    rule.channels.set(channels)
    return AlertRule.objects.select_related("tenant").get(pk=rule.pk)


def sample(value, tenant_id=None, **labels) -> Sample:
    return Sample(labels=labels, value=value, tenant_id=tenant_id)


def history(rule) -> list[tuple[str, str, str]]:
    """(kind, from_state, to_state) of every history row of the rule, oldest first."""
    return list(
        AlertEvent.objects.filter(rule=rule)
        .order_by("timestamp", "pk")
        .values_list("kind", "from_state", "to_state")
    )


def ledger(rule) -> list[tuple[str, str, str]]:
    """(kind, status, channel name) of every ledger row of the rule's events, oldest first."""
    return list(
        Notification.objects.filter(event__rule=rule)
        .order_by("event__timestamp", "event_id", "channel__name")
        .values_list("kind", "status", "channel__name")
    )


def refresh(rule) -> AlertRule:
    return AlertRule.objects.select_related("tenant").get(pk=rule.pk)
