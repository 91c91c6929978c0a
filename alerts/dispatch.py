"""The single place where a history event becomes notifications.

`notify(event)` writes one ledger row per (event, channel) with its status decided here:
queued, or suppressed by a silence or by the rule's cooldown. Queued rows of the same
rule, channel and kind created within ALERT_GROUP_WAIT ms share a `group_key`; the first
row of a group schedules the Celery task that delivers the whole group as one message
(alerts.delivery), after the group window and only once the transaction has committed.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .choices import (
    ACKNOWLEDGE_CHANNEL_TYPES,
    DELIVER_GROUP_TASK,
    SEND_RESOLVED_DEFAULT,
    NotificationKind,
    NotificationStatus,
)
from .models import AlertEvent, Notification, NotificationChannel
from .silences import silencing

logger = logging.getLogger(__name__)


def routing_labels(event: AlertEvent) -> dict:
    """The labels silences match on: the instance's, plus alertname, severity and tenant."""
    labels = {**event.labels, "alertname": event.rule.name, "severity": event.rule.severity}
    if event.tenant_id is not None:
        labels.setdefault("tenant", event.tenant.slug)
    return labels


def channels_for(event: AlertEvent) -> list[NotificationChannel]:
    """The rule's enabled channels; a global rule's instance also goes to its tenant's."""
    channels = {c.pk: c for c in event.rule.channels.filter(enabled=True)}
    if event.rule.tenant_id is None and event.tenant_id is not None and not event.is_test:
        for channel in NotificationChannel.objects.for_tenant(event.tenant).filter(
            enabled=True, is_fallback=False
        ):
            channels.setdefault(channel.pk, channel)
    return list(channels.values())


def channel_wants(channel: NotificationChannel, kind: str) -> bool:
    if kind == NotificationKind.RESOLVED:
        if channel.send_resolved is not None:
            return channel.send_resolved
        return SEND_RESOLVED_DEFAULT.get(channel.type, False)
    if kind == NotificationKind.ACKNOWLEDGE:
        return channel.type in ACKNOWLEDGE_CHANNEL_TYPES
    return True


def in_cooldown(event: AlertEvent, now) -> bool:
    """A new firing (or repeat) of an instance notified less than `cooldown` ms ago."""
    if (
        event.kind not in (NotificationKind.FIRING, NotificationKind.REPEAT)
        or event.instance is None
    ):
        return False
    last = event.instance.last_notified_at
    return last is not None and now - last < timedelta(milliseconds=event.rule.effective_cooldown)


def group_key_for(event: AlertEvent, channel: NotificationChannel, now) -> str:
    window_ms = settings.ALERT_GROUP_WAIT
    bucket = (
        f"e{event.pk}"
        if window_ms <= 0 or event.is_test
        else f"w{int(now.timestamp() * 1000) // window_ms}"
    )
    return f"{event.tenant_id or 'global'}:{event.rule_id}:{channel.pk}:{event.kind}:{bucket}"


def idempotency_key_for(event: AlertEvent, channel: NotificationChannel) -> str:
    return hashlib.sha256(f"notification:{event.pk}:{channel.pk}".encode()).hexdigest()


def schedule_group(group_key: str) -> None:
    countdown = settings.ALERT_GROUP_WAIT / 1000
    transaction.on_commit(
        lambda: current_app.send_task(DELIVER_GROUP_TASK, args=[group_key], countdown=countdown)
    )


@transaction.atomic
def notify(
    event: AlertEvent, channels: list[NotificationChannel] | None = None
) -> list[Notification]:
    """Write the ledger rows for `event` and schedule delivery of the queued ones."""
    now = timezone.now()
    silence = None if event.is_test else silencing(event.tenant, routing_labels(event), now)
    cooldown = in_cooldown(event, now)
    rows = []
    for channel in channels if channels is not None else channels_for(event):
        if not channel_wants(channel, event.kind):
            continue
        if silence is not None:
            status, reason = (
                NotificationStatus.SUPPRESSED_SILENCE,
                f"silenced by silence {silence.pk}",
            )
        elif cooldown:
            status, reason = NotificationStatus.SUPPRESSED_COOLDOWN, "within the rule's cooldown"
        else:
            status, reason = NotificationStatus.QUEUED, ""
        group_key = group_key_for(event, channel, now)
        new_group = (
            status == NotificationStatus.QUEUED
            and not Notification.objects.filter(
                Q(group_key=group_key), status=NotificationStatus.QUEUED
            ).exists()
        )
        row, created = Notification.objects.get_or_create(
            event=event,
            channel=channel,
            defaults={
                "tenant": event.tenant,
                "kind": event.kind,
                "status": status,
                "idempotency_key": idempotency_key_for(event, channel),
                "group_key": group_key,
                "last_error": reason,
                "is_test": event.is_test,
            },
        )
        rows.append(row)
        if created and new_group:
            schedule_group(group_key)
    if event.instance is not None and any(r.status == NotificationStatus.QUEUED for r in rows):
        if event.kind in (NotificationKind.FIRING, NotificationKind.REPEAT):
            type(event.instance).objects.filter(pk=event.instance.pk).update(last_notified_at=now)
            event.instance.last_notified_at = now
    return rows
