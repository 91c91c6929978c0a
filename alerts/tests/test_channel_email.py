"""Email through Django's mail API to a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import pytest

from alerts.choices import NotificationStatus
from alerts.tests.delivery_helpers import (
    drain,
    fire,
    make_channel,
    make_rule,
    notifications_total,
    queued_group,
    rows_of,
)
from alerts.tests.receivers import free_port, use_real_smtp

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def long_group_window(settings):
    settings.ALERT_GROUP_WAIT = 10**9
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    settings.ALERT_FROM_EMAIL = "traversion@alerts.example.test"


def test_firing_alert_arrives_with_subject_recipients_text_and_html(tenant_a, smtp_server):
    channel = make_channel(tenant_a, "email", {"to": ["oncall@example.test", "sre@example.test"]})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    event = fire(rule, {"service": "api"}, value=0.12)
    group = queued_group(event)

    [outcome] = drain(group)

    assert outcome.result == "sent"
    [mail] = smtp_server.messages
    assert mail.mail_from == "traversion@alerts.example.test"
    assert mail.rcpt_tos == ["oncall@example.test", "sre@example.test"]
    message = mail.message
    assert message["Subject"] == "[FIRING] traversion_high_error_rate: Error rate 12% on api"
    assert message["To"] == "oncall@example.test, sre@example.test"
    assert message["From"] == "traversion@alerts.example.test"
    assert message["Message-ID"].endswith("@alerts.example.test>")
    assert message["X-Traversion-Fingerprint"] == event.instance.fingerprint
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "[FIRING] traversion_high_error_rate" in part
        assert "Error rate 12% on api" in part
        assert "5xx responses above 5% of requests" in part
        assert "https://runbooks.example.test/high-error-rate" in part
        assert "service=api" in part
        assert "0.12" in part
    assert "Severity: critical" in text
    assert '<th align="left">Severity</th><td>critical</td>' in html
    assert f"/{event.instance_id}/" in text or str(event.instance_id) in text
    [row] = rows_of(group)
    assert row.status == NotificationStatus.SENT


def test_recipients_default_to_alert_to_email_and_html_is_escaped(tenant_a, smtp_server, settings):
    settings.ALERT_TO_EMAIL = ["ops-team@example.test"]
    channel = make_channel(tenant_a, "email", {})
    rule = make_rule(tenant_a, description="<script>alert(1)</script>")
    rule.channels.add(channel)
    drain(queued_group(fire(rule, summary="5 < 6 & 7 > 3")))
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["ops-team@example.test"]
    html = mail.message.get_body(preferencelist=("html",)).get_content()
    text = mail.message.get_body(preferencelist=("plain",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "5 < 6 & 7 > 3" in text  # the text part is not HTML-escaped


def test_grouped_email_lists_first_five_and_counts_the_rest(tenant_a, smtp_server):
    channel = make_channel(tenant_a, "email", {"to": ["oncall@example.test"]})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = {queued_group(fire(rule, {"host": f"db-{i}"}, value=i)) for i in range(8)}.pop()
    drain(group)
    [mail] = smtp_server.messages
    assert mail.message["Subject"].startswith("[FIRING:8] traversion_high_error_rate")
    text = mail.message.get_body(preferencelist=("plain",)).get_content()
    assert "8 alerts:" in text
    assert text.count("  - ") == 5
    assert "... and 3 more" in text


def test_smtp_server_down_is_retried_then_failed_and_visible(tenant_a, settings):
    use_real_smtp(settings)
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = free_port()  # nothing listens: connection refused
    settings.EMAIL_HOST_PASSWORD = "smtp-pass-do-not-log"
    channel = make_channel(tenant_a, "email", {"to": ["oncall@example.test"]})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))
    failed_before = notifications_total("email", "failed")
    retried_before = notifications_total("email", "retried")

    outcomes = drain(group)

    assert [o.result for o in outcomes] == ["retry", "retry", "failed"]
    [row] = rows_of(group)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == 3
    assert row.last_error.startswith("gave up after 3 attempts: email: could not reach 127.0.0.1:")
    assert "ConnectionRefusedError" in row.last_error
    channel.refresh_from_db()
    assert "could not reach" in channel.last_error and channel.last_error_at is not None
    assert notifications_total("email", "failed") - failed_before == 1
    assert notifications_total("email", "retried") - retried_before == 2
    assert "smtp-pass-do-not-log" not in row.last_error + channel.last_error


def test_refused_recipient_is_permanent(tenant_a, smtp_server):
    smtp_server.refuse_recipients = "550 5.1.1 No such user here"
    channel = make_channel(tenant_a, "email", {"to": ["nobody@example.test"]})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))
    [outcome] = drain(group)
    assert outcome.result == "failed"
    [row] = rows_of(group)
    assert row.last_error.startswith("permanent: email: every recipient refused")
    assert "550" in row.last_error
    assert smtp_server.messages == []
    channel.refresh_from_db()
    assert channel.broken_at is not None


def test_temporarily_refused_recipient_is_retried(tenant_a, smtp_server):
    smtp_server.refuse_recipients = "451 4.3.0 Try again later"
    channel = make_channel(tenant_a, "email", {"to": ["busy@example.test"]})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))
    from alerts.delivery import deliver_group

    first = deliver_group(group)
    assert first.result == "retry"
    smtp_server.refuse_recipients = None
    assert deliver_group(group, now=first.next_attempt_at).result == "sent"
    assert len(smtp_server.messages) == 1
