"""Webhook: Alertmanager's version 4 JSON, HMAC-SHA256 signed, against a local receiver."""

from __future__ import annotations

import hashlib
import hmac
import threading

import pytest

from alerts.channels import get_transport
from alerts.channels.base import AlertMessage
from alerts.choices import NotificationStatus
from alerts.dispatch import notify
from alerts.tests.delivery_helpers import (
    drain,
    fire,
    make_channel,
    make_rule,
    queued_group,
    resolve,
    rows_of,
)
from alerts.tests.receivers import Reply

pytestmark = pytest.mark.django_db

SECRET = "whsec-0f9a8b7c6d5e4f3a"


@pytest.fixture(autouse=True)
def long_group_window(settings):
    settings.ALERT_GROUP_WAIT = 10**9
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: HMAC the raw body, compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_firing_group_is_alertmanager_v4_json_signed_over_the_exact_body(tenant_a, http_receiver):
    receiver = http_receiver()
    channel = make_channel(
        tenant_a, "webhook", {"url": receiver.url + "/alerts", "secret": SECRET}, name="hooks"
    )
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    events = [fire(rule, {"service": s}, value=v) for s, v in (("api", 0.12), ("auth", 0.2))]
    group = {queued_group(e) for e in events}.pop()

    [outcome] = drain(group)

    assert outcome.result == "sent"
    [request] = receiver.requests
    signature = request.header("X-Traversion-Signature")
    assert signature.startswith("sha256=")
    assert verify(SECRET, request.body, signature)
    assert not verify("another-secret", request.body, signature)
    assert not verify(SECRET, request.body + b" ", signature)

    body = request.json()
    message = AlertMessage.from_notifications(rows_of(group))
    assert body == get_transport("webhook").render(message, channel)
    assert request.header("X-Traversion-Idempotency-Key") == message.idempotency_key
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "hooks"
    assert body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"alertname": "traversion_high_error_rate", "tenant": "alpha"}
    assert body["groupKey"] == '{}:{alertname="traversion_high_error_rate", tenant="alpha"}'
    assert body["commonLabels"] == {
        "team": "platform",
        "alertname": "traversion_high_error_rate",
        "severity": "critical",
        "tenant": "alpha",
    }
    assert body["commonAnnotations"] == {
        "description": "5xx responses above 5% of requests",
        "runbook_url": "https://runbooks.example.test/high-error-rate",
    }
    assert body["externalURL"] == "http://127.0.0.1:8000"
    assert len(body["alerts"]) == 2
    first = body["alerts"][0]
    assert set(first) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert first["status"] == "firing"
    assert first["labels"]["service"] == "api"
    assert first["annotations"]["summary"] == "Error rate 12% on api"
    assert first["fingerprint"] == events[0].instance.fingerprint
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert first["startsAt"].endswith("Z")
    assert first["generatorURL"].startswith("http://127.0.0.1:8000/")


def test_resolved_is_sent_by_default_with_ends_at(tenant_a, http_receiver):
    receiver = http_receiver()
    channel = make_channel(tenant_a, "webhook", {"url": receiver.url + "/alerts"})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    fired = fire(rule)
    drain(queued_group(fired))
    drain(queued_group(resolve(fired.instance)))

    resolved = receiver.requests[1].json()
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    # Without a secret nothing is signed.
    assert receiver.requests[1].header("X-Traversion-Signature") is None


def test_max_alerts_truncates_and_says_so(tenant_a, http_receiver):
    receiver = http_receiver()
    channel = make_channel(tenant_a, "webhook", {"url": receiver.url, "max_alerts": 2})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = {queued_group(fire(rule, {"service": f"s{i}"})) for i in range(5)}.pop()
    drain(group)
    body = receiver.requests[0].json()
    assert len(body["alerts"]) == 2
    assert body["truncatedAlerts"] == 3


def test_configured_timeout_makes_a_slow_receiver_a_retryable_error(tenant_a, http_receiver):
    release = threading.Event()
    receiver = http_receiver(Reply(200, "ok", hold=release), Reply(200, "ok"))
    channel = make_channel(tenant_a, "webhook", {"url": receiver.url, "timeout": 0.3})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))
    try:
        outcomes = drain(group)
    finally:
        release.set()
    assert [o.result for o in outcomes] == ["retry", "sent"]
    # The request left and no answer came: the outcome is unknown, the retry says so.
    assert outcomes[0].error.startswith("interrupted: Webhook: timed out waiting for 127.0.0.1")
    [row] = rows_of(group)
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)
    assert len(receiver.requests) == 2
    # Both attempts carry the same idempotency key: a receiver can drop the duplicate.
    keys = {r.header("X-Traversion-Idempotency-Key") for r in receiver.requests}
    assert len(keys) == 1
    assert receiver.requests[0].header("X-Traversion-Redelivery") is None
    assert receiver.requests[1].header("X-Traversion-Redelivery") == "true"


def test_4xx_is_permanent_and_5xx_retried_until_the_limit(tenant_a, http_receiver):
    gone = http_receiver(default=Reply(401, "unauthorized"))
    down = http_receiver(default=Reply(500, "oops"))
    rule = make_rule(tenant_a)
    a = make_channel(tenant_a, "webhook", {"url": gone.url})
    b = make_channel(tenant_a, "webhook", {"url": down.url})
    rule.channels.add(a, b)
    event = fire(rule)
    rows = {r.channel_id: r for r in notify(event)}
    group_a, group_b = rows[a.pk].group_key, rows[b.pk].group_key

    assert [o.result for o in drain(group_a)] == ["failed"]
    assert [o.result for o in drain(group_b)] == ["retry", "retry", "failed"]
    assert len(gone.requests) == 1
    assert len(down.requests) == 3
    [row_b] = rows_of(group_b)
    assert row_b.status == NotificationStatus.FAILED
    assert row_b.last_error.startswith("gave up after 3 attempts: Webhook answered HTTP 500")
    b.refresh_from_db()
    assert b.broken_at is None  # exhausted retries are not a broken configuration
    assert "HTTP 500" in b.last_error
