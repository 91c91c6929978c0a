"""The single place where a history event becomes notifications.

`notify(event)` writes one ledger row per (event, channel) with its status decided here:
queued, or suppressed by a silence or by the rule's cooldown. Queued rows of the same
rule, channel and kind created within ALERT_GROUP_WAIT ms share a `group_key`; the first
row of a group schedules the Celery task that delivers the whole group as one message
(alerts.delivery), after the group window and only once the transaction has committed.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from metrics.catalogue import ALERT_NOTIFICATIONS

from .choices import (
    DELIVER_GROUP_TASK,
    HISTORY_ONLY_KINDS,
    NotificationKind,
    NotificationStatus,
)
from .models import AlertEvent, Notification, NotificationChannel
from .silences import active_silences, matches

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
    """Whether the channel takes this kind; the channel's transport gives the defaults."""
    from .channels import TRANSPORTS

    if kind in HISTORY_ONLY_KINDS:  # pending, nodata, error...: history, not a page
        return False
    transport = TRANSPORTS.get(channel.type)
    if kind == NotificationKind.RESOLVED:
        if channel.send_resolved is not None:
            return channel.send_resolved
        return transport is not None and transport.send_resolved_default
    if kind == NotificationKind.ACKNOWLEDGE:
        return transport is not None and transport.supports_acknowledge
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


SUPPRESSED_STATUSES = (
    NotificationStatus.SUPPRESSED_SILENCE,
    NotificationStatus.SUPPRESSED_COOLDOWN,
)


def count_suppressed(rows: list[Notification]) -> None:
    """Suppressions are delivery outcomes too: count them where they are decided."""
    counts = collections.Counter(
        row.channel.type for row in rows if row.status in SUPPRESSED_STATUSES
    )
    for channel_type, amount in counts.items():
        ALERT_NOTIFICATIONS.labels(channel_type=channel_type, result="suppressed").inc(amount)


def schedule_group(group_key: str) -> None:
    countdown = settings.ALERT_GROUP_WAIT / 1000
    transaction.on_commit(
        lambda: current_app.send_task(DELIVER_GROUP_TASK, args=[group_key], countdown=countdown)
    )


def notify(
    event: AlertEvent, channels: list[NotificationChannel] | None = None
) -> list[Notification]:
    """Write the ledger rows for `event` and schedule delivery of the queued ones."""
    return notify_many([event], None if channels is None else {event.pk: channels})[event.pk]


@transaction.atomic
def notify_many(
    events: list[AlertEvent], channels: dict[int, list[NotificationChannel]] | None = None
) -> dict[int, list[Notification]]:
    """`notify` for many events at once (an evaluation's transitions, an alert storm).

    The same decisions as one event at a time, in a constant number of queries: active
    silences read once per tenant, existing rows and open groups read once, the new
    rows written with one INSERT.
    """
    silences: dict = {}
    decided = []  # (event, channel, status, reason, group_key, now)
    for event in events:
        # Decide at the event's time (the evaluation's): silences and cooldown as they
        # were then, and every instance of one evaluation in the same group window.
        now = event.timestamp or timezone.now()
        silence = None
        if not event.is_test:
            key = (event.tenant_id, now)
            if key not in silences:
                silences[key] = list(active_silences(event.tenant, now))
            labels = routing_labels(event)
            silence = next((s for s in silences[key] if matches(s.matchers, labels)), None)
        cooldown = in_cooldown(event, now)
        wanted = channels.get(event.pk) if channels is not None else None
        for channel in wanted if wanted is not None else channels_for(event):
            if not channel_wants(channel, event.kind):
                continue
            if silence is not None:
                status, reason = (
                    NotificationStatus.SUPPRESSED_SILENCE,
                    f"silenced by silence {silence.pk}",
                )
            elif cooldown:
                status, reason = (
                    NotificationStatus.SUPPRESSED_COOLDOWN,
                    "within the rule's cooldown",
                )
            else:
                status, reason = NotificationStatus.QUEUED, ""
            decided.append(
                (event, channel, status, reason, group_key_for(event, channel, now), now)
            )
    rows: dict[int, list[Notification]] = {event.pk: [] for event in events}
    if not decided:
        return rows
    existing = {
        (row.event_id, row.channel_id): row
        for row in Notification.objects.filter(event__in=[e.pk for e in events])
    }
    queued_keys = {d[4] for d in decided if d[2] == NotificationStatus.QUEUED}
    open_groups = set(
        Notification.objects.filter(
            group_key__in=queued_keys, status=NotificationStatus.QUEUED
        ).values_list("group_key", flat=True)
    )
    new_rows, new_groups = [], []
    for event, channel, status, reason, group_key, _now in decided:
        row = existing.get((event.pk, channel.pk))
        if row is None:
            row = Notification(
                event=event,
                channel=channel,
                tenant_id=event.tenant_id,
                kind=event.kind,
                status=status,
                idempotency_key=idempotency_key_for(event, channel),
                group_key=group_key,
                last_error=reason,
                is_test=event.is_test,
            )
            new_rows.append(row)
            if status == NotificationStatus.QUEUED and group_key not in open_groups:
                open_groups.add(group_key)
                new_groups.append(group_key)
        rows[event.pk].append(row)
    Notification.objects.bulk_create(new_rows)
    count_suppressed(new_rows)
    for group_key in new_groups:
        schedule_group(group_key)
    notified: dict = {}
    for event, _channel, status, _reason, _key, now in decided:
        if (
            status == NotificationStatus.QUEUED
            and event.instance is not None
            and event.kind in (NotificationKind.FIRING, NotificationKind.REPEAT)
        ):
            notified.setdefault(now, {})[event.instance.pk] = event.instance
    for now, instances in notified.items():
        type(next(iter(instances.values()))).objects.filter(pk__in=list(instances)).update(
            last_notified_at=now
        )
        for instance in instances.values():
            instance.last_notified_at = now
    return rows
