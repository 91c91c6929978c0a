"""Sending a test message through one channel (API `POST .../channels/{id}/test`, admin).

A channel test is not an alert: it has no rule, no history event and no ledger row. It
is sent synchronously through the channel's own transport (the same `send` delivery
uses), so the caller sees at once whether the provider took it, and its outcome is kept
on the channel like a delivery's (last success, last error; a success clears "broken").
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from .choices import NotificationKind, Severity
from .models import NotificationChannel

TEST_ALERTNAME = "TraversionChannelTest"
LAST_ERROR_LIMIT = 2000


@dataclass
class ChannelTestResult:
    channel: NotificationChannel
    status: str  # sent | failed
    error: str
    duration_ms: float
    payload: Any


def channel_link(channel: NotificationChannel) -> str:
    try:
        path = reverse("admin:alerts_notificationchannel_change", args=[channel.pk])
    except NoReverseMatch:
        path = f"/api/v1/channels/{channel.pk}/"
    return settings.PUBLIC_URL + path


def channel_test_message(
    channel: NotificationChannel, *, tenant=None, actor: str = "", text: str = ""
):
    """The AlertMessage a channel test sends (marked as a test by every transport)."""
    from .channels.base import AlertItem, AlertMessage

    now = timezone.now()
    tenant_slug = tenant.slug if tenant is not None else ""
    summary = text or f"Test message for channel {channel.name}"
    description = f"Sent from Traversion by {actor or 'an operator'} to check this channel."
    labels = {"alertname": TEST_ALERTNAME, "channel": channel.name, "severity": Severity.INFO}
    if tenant_slug:
        labels["tenant"] = tenant_slug
    key = hashlib.sha256(f"channel-test:{channel.pk}:{now.isoformat()}".encode()).hexdigest()
    annotations = {"summary": summary, "description": description}
    item = AlertItem(
        fingerprint=key[:32],
        status="firing",
        labels=labels,
        annotations=annotations,
        value=None,
        starts_at=now,
        ends_at=None,
        url=channel_link(channel),
        instance_id=None,
        event_id=0,
    )
    return AlertMessage(
        kind=NotificationKind.TEST,
        status="firing",
        rule_id=0,
        rule_name=TEST_ALERTNAME,
        severity=Severity.INFO,
        summary=summary,
        description=description,
        runbook_url="",
        tenant=tenant_slug,
        alerts=(item,),
        common_labels=labels,
        common_annotations=annotations,
        group_key=f"channel-test:{channel.pk}",
        idempotency_key=key,
        timestamp=now,
        is_test=True,
    )


def send_channel_test(
    channel: NotificationChannel, *, tenant=None, actor: str = "", text: str = ""
) -> ChannelTestResult:
    """Send a test message now and record the outcome on the channel."""
    from .channels import get_transport
    from .channels.base import DeliveryError

    transport = get_transport(channel.type)
    message = channel_test_message(channel, tenant=tenant, actor=actor, text=text)
    payload = transport.render(message)  # without the channel: secrets stay masked
    started = time.monotonic()
    try:
        transport.send(channel, message)
    except DeliveryError as exc:
        # DeliveryError messages never carry secrets (the transport contract).
        error = str(exc)[:LAST_ERROR_LIMIT]
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        NotificationChannel.objects.filter(pk=channel.pk).update(
            last_error=f"test: {error}"[:LAST_ERROR_LIMIT], last_error_at=timezone.now()
        )
        return ChannelTestResult(channel, "failed", error, duration_ms, payload)
    duration_ms = round((time.monotonic() - started) * 1000, 3)
    NotificationChannel.objects.filter(pk=channel.pk).update(
        last_success_at=timezone.now(), broken_at=None
    )
    return ChannelTestResult(channel, "sent", "", duration_ms, payload)
