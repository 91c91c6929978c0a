"""Builders for delivery tests: rules, instances, history events, channels, and a drain loop.

The alert engine owns the state machine; these tests only need its rows, so they build
AlertRule / AlertInstance / AlertEvent directly and hand the event to dispatch.notify.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from prometheus_client import REGISTRY

from alerts.choices import InstanceState, NotificationKind, NotificationStatus
from alerts.delivery import DeliveryOutcome, deliver_group
from alerts.dispatch import notify
from alerts.models import (
    AlertEvent,
    AlertInstance,
    AlertRule,
    Notification,
    NotificationChannel,
    fingerprint_of,
)

RUNBOOK = "https://runbooks.example.test/high-error-rate"


def make_rule(tenant, name="traversion_high_error_rate", **fields) -> AlertRule:
    defaults = {
        "severity": "critical",
        "description": "5xx responses above 5% of requests",
        "runbook_url": RUNBOOK,
        "datasource": "external",  # pushed alerts: the evaluation engine leaves them alone
        "labels": {"team": "platform"},
    }
    defaults.update(fields)
    return AlertRule.objects.create(tenant=tenant, name=name, **defaults)


def make_channel(tenant, channel_type: str, config: dict, name: str | None = None, **fields):
    return NotificationChannel.objects.create(
        tenant=tenant,
        name=name or f"{channel_type}-{NotificationChannel.objects.count() + 1}",
        type=channel_type,
        config=config,
        **fields,
    )


def fire(rule, labels=None, value=0.12, summary=None, *, is_test=False) -> AlertEvent:
    """An instance goes firing (created if new) and its history event is written."""
    labels = labels if labels is not None else {"service": "api"}
    now = timezone.now()
    annotations = {"summary": summary or f"Error rate {value:.0%} on {labels.get('service', '?')}"}
    instance, _ = AlertInstance.objects.update_or_create(
        rule=rule,
        fingerprint=fingerprint_of(rule.pk, labels),
        defaults={
            "tenant": rule.tenant,
            "labels": labels,
            "annotations": annotations,
            "state": InstanceState.FIRING,
            "value": value,
            "firing_since": now - timedelta(minutes=2),
            "last_state_change_at": now,
            "resolved_at": None,
        },
    )
    return AlertEvent.objects.create(
        rule=rule,
        instance=instance,
        tenant=rule.tenant,
        kind=NotificationKind.TEST if is_test else NotificationKind.FIRING,
        from_state=InstanceState.PENDING,
        to_state=InstanceState.FIRING,
        value=value,
        labels=labels,
        annotations=annotations,
        is_test=is_test,
    )


def resolve(instance: AlertInstance) -> AlertEvent:
    now = timezone.now()
    instance.state = InstanceState.RESOLVED
    instance.resolved_at = now
    instance.last_state_change_at = now
    instance.save()
    return AlertEvent.objects.create(
        rule=instance.rule,
        instance=instance,
        tenant=instance.tenant,
        kind=NotificationKind.RESOLVED,
        from_state=InstanceState.FIRING,
        to_state=InstanceState.RESOLVED,
        value=0.01,
        labels=instance.labels,
        annotations=instance.annotations,
    )


def acknowledge(instance: AlertInstance, user=None) -> AlertEvent:
    now = timezone.now()
    instance.acknowledged_by = user
    instance.acknowledged_at = now
    instance.ack_comment = "looking"
    instance.save()
    return AlertEvent.objects.create(
        rule=instance.rule,
        instance=instance,
        tenant=instance.tenant,
        kind=NotificationKind.ACKNOWLEDGE,
        from_state=instance.state,
        to_state=instance.state,
        value=instance.value,
        labels=instance.labels,
        annotations=instance.annotations,
    )


def queued_group(event: AlertEvent, channel=None) -> str:
    """notify(event) and return the group key of its queued row (on `channel` if given)."""
    rows = [r for r in notify(event) if channel is None or r.channel_id == channel.pk]
    queued = [r for r in rows if r.status == NotificationStatus.QUEUED]
    assert len(queued) == 1, [(r.channel_id, r.status) for r in rows]
    return queued[0].group_key


def drain(group_key: str, limit: int = 20) -> list[DeliveryOutcome]:
    """Run deliver_group until the group is settled, each retry at its scheduled time.

    Time is passed in (`now`), not slept: the ledger's next_attempt_at is the schedule.
    """
    outcomes: list[DeliveryOutcome] = []
    now = None
    for _ in range(limit):
        outcome = deliver_group(group_key, now=now)
        outcomes.append(outcome)
        if outcome.result not in ("retry", "not_due"):
            return outcomes
        now = outcome.next_attempt_at
    raise AssertionError(f"group {group_key} did not settle: {outcomes}")


def rows_of(group_key: str) -> list[Notification]:
    return list(Notification.objects.filter(group_key=group_key).order_by("pk"))


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def notifications_total(channel_type: str, result: str) -> float:
    return sample("traversion_alert_notifications_total", channel_type=channel_type, result=result)
