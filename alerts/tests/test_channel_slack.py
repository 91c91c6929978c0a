"""Slack incoming webhook against a local receiver: payload, retries, permanent errors."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from alerts.channels import get_transport
from alerts.channels.base import AlertMessage
from alerts.choices import NotificationStatus
from alerts.dispatch import notify
from alerts.models import Notification, NotificationChannel
from alerts.tests.delivery_helpers import (
    RUNBOOK,
    drain,
    fire,
    make_channel,
    make_rule,
    notifications_total,
    queued_group,
    rows_of,
    sample,
)
from alerts.tests.receivers import Reply

pytestmark = pytest.mark.django_db


def notify_rows(event):
    return [r for r in notify(event) if r.status == NotificationStatus.QUEUED]


@pytest.fixture(autouse=True)
def long_group_window(settings):
    # Everything a test fires lands in one group window, whatever the clock says.
    settings.ALERT_GROUP_WAIT = 10**9
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 6


def test_firing_alert_is_one_block_kit_message_with_fallback_text(tenant_a, http_receiver):
    slack = http_receiver()
    channel = make_channel(tenant_a, "slack", {"webhook_url": slack.url + "/services/T0/B0/s3cr3t"})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    event = fire(rule, {"service": "api", "region": "eu"}, value=0.12)
    group = queued_group(event)

    [outcome] = drain(group)

    assert outcome.result == "sent"
    assert len(slack.requests) == 1
    request = slack.requests[0]
    assert request.path == "/services/T0/B0/s3cr3t"
    assert request.header("Content-Type") == "application/json"
    body = request.json()
    message = AlertMessage.from_notifications(rows_of(group))
    assert body == get_transport("slack").render(message, channel)

    assert body["text"] == "[FIRING] traversion_high_error_rate: Error rate 12% on api"
    blocks = body["blocks"]
    assert [b["type"] for b in blocks] == [
        "header",
        "section",
        "section",
        "section",
        "section",
        "actions",
        "context",
    ]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": "[FIRING] traversion_high_error_rate",
        "emoji": True,
    }
    assert blocks[1]["text"]["text"] == ":red_circle: *Error rate 12% on api*"
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert fields == [
        "*Severity*\ncritical",
        "*Status*\nfiring",
        "*Value*\n0.12",
        "*Tenant*\nalpha",
    ]
    assert blocks[3]["text"]["text"] == "5xx responses above 5% of requests"
    labels = blocks[4]["text"]["text"]
    assert labels.startswith("*Labels*\n")
    for pair in (
        "alertname=traversion_high_error_rate",
        "service=api",
        "region=eu",
        "tenant=alpha",
    ):
        assert f"`{pair}`" in labels
    buttons = {b["text"]["text"]: b["url"] for b in blocks[5]["elements"]}
    assert buttons["Runbook"] == RUNBOOK
    assert buttons["View alert"].startswith("http://127.0.0.1:8000/")
    assert (
        buttons["View alert"].endswith(f"/{event.instance_id}/")
        or str(event.instance_id) in buttons["View alert"]
    )
    assert event.instance.fingerprint in blocks[6]["elements"][0]["text"]

    row = Notification.objects.get(event=event)
    assert (row.status, row.attempts, row.last_error) == (NotificationStatus.SENT, 1, "")
    assert row.duration_ms is not None and row.sent_at is not None
    channel.refresh_from_db()
    assert channel.last_success_at is not None and channel.broken_at is None


def test_storm_is_one_message_listing_the_first_five_and_every_row_in_the_ledger(
    tenant_a, http_receiver
):
    slack = http_receiver()
    channel = make_channel(tenant_a, "slack", {"webhook_url": slack.url + "/hook"})
    rule = make_rule(tenant_a, name="traversion_high_cpu", severity="warning", runbook_url="")
    rule.channels.add(channel)
    events = [fire(rule, {"host": f"web-{i}"}, value=90 + i) for i in range(7)]
    groups = {queued_group(e) for e in events}
    assert len(groups) == 1

    [outcome] = drain(groups.pop())

    assert outcome.rows == 7
    assert len(slack.requests) == 1
    body = slack.requests[0].json()
    assert body["text"].startswith(
        "[FIRING:7] traversion_high_cpu: 7 alerts of traversion_high_cpu"
    )
    listing = next(
        b
        for b in body["blocks"]
        if b["type"] == "section" and "7 alerts*" in b.get("text", {}).get("text", "")
    )
    text = listing["text"]["text"]
    assert text.count("\n•") == 5
    assert text.endswith("_and 2 more_")
    # No runbook on this rule: only the link back to the alert.
    actions = next(b for b in body["blocks"] if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]] == ["View alert"]

    rows = list(Notification.objects.filter(event__in=events).order_by("pk"))
    assert [r.status for r in rows] == ["sent"] + ["grouped"] * 6
    assert all(r.delivered_with_id == rows[0].pk for r in rows[1:])
    assert all(r.attempts == 1 for r in rows)


def test_500_three_times_then_200_sends_exactly_one_message_after_four_attempts(
    tenant_a, http_receiver
):
    slack = http_receiver(
        Reply(500, "rollup_error"), Reply(500, "rollup_error"), Reply(503, "busy"), Reply(200, "ok")
    )
    channel = make_channel(tenant_a, "slack", {"webhook_url": slack.url + "/hook"})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))
    before = {r: notifications_total("slack", r) for r in ("sent", "retried", "failed")}
    duration_before = sample(
        "traversion_alert_notification_duration_seconds_count", channel_type="slack"
    )

    outcomes = drain(group)

    assert [o.result for o in outcomes] == ["retry", "retry", "retry", "sent"]
    # Each retry waited longer than the one before (exponential backoff).
    delays = [o.retry_in for o in outcomes[:3]]
    assert delays[0] < delays[1] < delays[2]
    assert len(slack.requests) == 4
    assert len(slack.accepted) == 1
    assert len({r.body for r in slack.requests}) == 1  # the same message every time
    [row] = rows_of(group)
    assert row.status == NotificationStatus.SENT
    assert row.attempts == 4
    assert "HTTP 503" in row.last_error  # the last error stays for the record
    assert notifications_total("slack", "retried") - before["retried"] == 3
    assert notifications_total("slack", "sent") - before["sent"] == 1
    assert notifications_total("slack", "failed") - before["failed"] == 0
    assert (
        sample("traversion_alert_notification_duration_seconds_count", channel_type="slack")
        - duration_before
        == 4
    )


def test_429_retry_after_is_honoured(tenant_a, http_receiver):
    slack = http_receiver(
        Reply(429, "rate_limited", headers={"Retry-After": "120"}), Reply(200, "ok")
    )
    channel = make_channel(tenant_a, "slack", {"webhook_url": slack.url + "/hook"})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))

    from alerts.delivery import deliver_group

    first = deliver_group(group)
    assert first.result == "retry"
    assert first.retry_in >= 120
    [row] = rows_of(group)
    assert row.status == NotificationStatus.QUEUED
    assert row.next_attempt_at >= row.claimed_at + timedelta(seconds=120)
    assert "HTTP 429" in row.last_error

    # Before Retry-After has passed nothing is sent: the group is "not due".
    early = deliver_group(group, now=row.next_attempt_at - timedelta(seconds=1))
    assert early.result == "not_due"
    assert 0 < early.retry_in <= 1.0001
    assert len(slack.requests) == 1

    done = deliver_group(group, now=row.next_attempt_at)
    assert done.result == "sent"
    assert len(slack.requests) == 2
    row.refresh_from_db()
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, "channel_not_found"), (410, "channel_is_archived"), (403, "action_prohibited")],
)
def test_permanent_slack_error_marks_channel_broken_and_uses_the_fallback(
    tenant_a, http_receiver, status, error
):
    slack = http_receiver(default=Reply(status, error))
    fallback_hook = http_receiver()
    channel = make_channel(
        tenant_a, "slack", {"webhook_url": slack.url + "/hook"}, name="ops-slack"
    )
    fallback = make_channel(
        tenant_a,
        "webhook",
        {"url": fallback_hook.url + "/fallback"},
        name="ops-fallback",
        is_fallback=True,
    )
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    event = fire(rule)
    group = queued_group(event)
    failed_before = notifications_total("slack", "failed")

    [outcome] = drain(group)

    assert outcome.result == "failed"
    assert len(slack.requests) == 1  # not retried
    [row] = rows_of(group)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == 1
    assert row.last_error == f"permanent: Slack answered HTTP {status}: {error}"
    channel.refresh_from_db()
    assert channel.broken_at is not None
    assert error in channel.last_error
    assert notifications_total("slack", "failed") - failed_before == 1

    # The fallback channel gets the notification through its own ledger row.
    reroute = Notification.objects.get(fallback_for=row)
    assert reroute.channel == fallback
    assert reroute.event_id == event.pk
    assert outcome.fallback_group == reroute.group_key
    [fallback_outcome] = drain(reroute.group_key)
    assert fallback_outcome.result == "sent"
    reroute.refresh_from_db()
    assert reroute.status == NotificationStatus.SENT
    assert len(fallback_hook.requests) == 1
    delivered = fallback_hook.requests[0].json()
    assert delivered["alerts"][0]["fingerprint"] == event.instance.fingerprint
    assert delivered["receiver"] == "ops-fallback"


def test_a_broken_channel_heals_on_the_next_success(tenant_a, http_receiver):
    slack = http_receiver(Reply(404, "channel_not_found"), Reply(200, "ok"))
    channel = make_channel(tenant_a, "slack", {"webhook_url": slack.url + "/hook"})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    drain(queued_group(fire(rule, {"service": "a"})))
    channel.refresh_from_db()
    assert channel.broken_at is not None
    drain(queued_group(fire(rule, {"service": "b"})))
    channel.refresh_from_db()
    assert channel.broken_at is None
    assert channel.last_success_at is not None


def test_without_fallback_a_permanent_error_leaves_a_visible_failed_row(tenant_a, http_receiver):
    slack = http_receiver(default=Reply(404, "no_service"))
    channel = make_channel(tenant_a, "slack", {"webhook_url": slack.url + "/hook"})
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    [outcome] = drain(queued_group(fire(rule)))
    assert outcome.result == "failed" and outcome.fallback_group is None
    assert Notification.objects.filter(status="failed").count() == 1
    assert Notification.objects.count() == 1


def test_webhook_url_never_reaches_logs_or_the_ledger(tenant_a, http_receiver, caplog):
    from alerts.delivery import deliver_group
    from alerts.tests.receivers import free_port

    secret_path = "/services/T000/B000/XXXXsupersecretXXXX"
    rule = make_rule(tenant_a)
    refused = make_channel(
        tenant_a, "slack", {"webhook_url": f"http://127.0.0.1:{free_port()}{secret_path}"}
    )
    slack = http_receiver()
    working = make_channel(tenant_a, "slack", {"webhook_url": slack.url + secret_path})
    rule.channels.add(refused, working)
    rows = notify_rows(fire(rule))

    with caplog.at_level(logging.DEBUG):
        outcomes = [deliver_group(r.group_key) for r in rows]

    # Nothing listens on the first URL (connection refused); the second one answers.
    assert sorted(o.result for o in outcomes) == ["retry", "sent"]
    assert slack.requests[0].path == secret_path
    texts = [caplog.text, *(o.error for o in outcomes)]
    for row in Notification.objects.all():
        texts.append(row.last_error)
    for channel in NotificationChannel.objects.all():
        texts.append(channel.last_error)
    assert any("could not reach 127.0.0.1" in t for t in texts)
    assert "POST" in caplog.text or "sent via slack" in caplog.text  # logging was on
    for text in texts:
        assert "supersecret" not in text


def test_titles_say_what_happened(tenant_a, http_receiver):
    from alerts.tests.delivery_helpers import resolve

    slack = http_receiver()
    channel = make_channel(
        tenant_a, "slack", {"webhook_url": slack.url + "/hook"}, send_resolved=True
    )
    rule = make_rule(tenant_a, severity="warning")
    rule.channels.add(channel)
    fired = fire(rule)
    drain(queued_group(fired))
    flapping = fire(rule)
    flapping.kind = "flapping"
    flapping.save()
    drain(queued_group(flapping))
    drain(queued_group(resolve(fired.instance)))
    headers = [r.json()["blocks"][0]["text"]["text"] for r in slack.requests]
    assert headers == [
        "[FIRING] traversion_high_error_rate",
        "[FLAPPING] traversion_high_error_rate",
        "[RESOLVED] traversion_high_error_rate",
    ]
    icons = [r.json()["blocks"][1]["text"]["text"].split()[0] for r in slack.requests]
    assert icons == [":large_orange_circle:", ":large_orange_circle:", ":large_green_circle:"]
