"""PagerDuty Events API v2 against a local receiver: trigger, acknowledge, resolve."""

from __future__ import annotations

import pytest

from alerts.choices import NotificationStatus
from alerts.dispatch import notify
from alerts.models import Notification
from alerts.tests.delivery_helpers import (
    RUNBOOK,
    acknowledge,
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

ROUTING_KEY = "R0123456789abcdef0123456789abcd"
ACCEPTED = Reply(
    202,
    '{"status":"success","message":"Event processed","dedup_key":"x"}',
    headers={"Content-Type": "application/json"},
)


@pytest.fixture(autouse=True)
def long_group_window(settings):
    settings.ALERT_GROUP_WAIT = 10**9
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 4


@pytest.fixture
def pagerduty(http_receiver, tenant_a):
    receiver = http_receiver(default=ACCEPTED)
    channel = make_channel(
        tenant_a,
        "pagerduty",
        {"routing_key": ROUTING_KEY, "api_url": receiver.url + "/v2/enqueue"},
        name="oncall",
    )
    return receiver, channel


def test_trigger_acknowledge_resolve_share_one_dedup_key(tenant_a, users, pagerduty):
    receiver, channel = pagerduty
    rule = make_rule(tenant_a)
    rule.channels.add(channel)

    fired = fire(rule, {"service": "api", "instance": "web-1:8000"}, value=0.12)
    assert drain(queued_group(fired))[-1].result == "sent"
    acked = acknowledge(fired.instance, users["owner"])
    assert drain(queued_group(acked))[-1].result == "sent"
    resolved = resolve(fired.instance)
    assert drain(queued_group(resolved))[-1].result == "sent"

    assert [r.path for r in receiver.requests] == ["/v2/enqueue"] * 3
    trigger, ack, res = (r.json() for r in receiver.requests)
    fingerprint = fired.instance.fingerprint
    assert [e["event_action"] for e in (trigger, ack, res)] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in (trigger, ack, res)} == {fingerprint}
    assert {e["routing_key"] for e in (trigger, ack, res)} == {ROUTING_KEY}
    # Follow-up events carry exactly what the Events API needs, nothing else.
    assert ack == {
        "routing_key": ROUTING_KEY,
        "event_action": "acknowledge",
        "dedup_key": fingerprint,
    }
    assert res == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": fingerprint}

    payload = trigger["payload"]
    assert payload["summary"] == "[FIRING] traversion_high_error_rate: Error rate 12% on api"
    assert payload["source"] == "web-1:8000"
    assert payload["severity"] == "critical"
    assert payload["timestamp"].endswith("Z")
    assert payload["class"] == "traversion_high_error_rate"
    assert payload["group"] == "alpha"
    assert payload["component"] == "api"
    details = payload["custom_details"]
    assert details["value"] == "0.12"
    assert details["description"] == "5xx responses above 5% of requests"
    assert details["labels"]["alertname"] == "traversion_high_error_rate"
    assert details["labels"]["tenant"] == "alpha"
    assert details["fingerprint"] == fingerprint
    assert trigger["client"] == "Traversion"
    assert trigger["client_url"].startswith("http://127.0.0.1:8000/")
    assert trigger["links"] == [
        {"href": trigger["client_url"], "text": "Alert in Traversion"},
        {"href": RUNBOOK, "text": "Runbook"},
    ]
    assert set(trigger) == {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "client",
        "client_url",
        "links",
    }
    statuses = [r.status for r in Notification.objects.filter(channel=channel)]
    assert statuses == [NotificationStatus.SENT] * 3


def test_summary_is_cut_to_1024_characters_and_severities_are_mapped(tenant_a, pagerduty):
    receiver, channel = pagerduty
    for severity, expected in (("warning", "warning"), ("info", "info"), ("security", "error")):
        rule = make_rule(tenant_a, name=f"rule_{severity}", severity=severity)
        rule.channels.add(channel)
        drain(queued_group(fire(rule, summary="x" * 3000)))
        payload = receiver.requests[-1].json()["payload"]
        assert payload["severity"] == expected
        assert len(payload["summary"]) == 1024
        assert payload["summary"].startswith(f"[FIRING] rule_{severity}: xxx")


def test_a_group_sends_one_event_per_instance_each_with_its_own_dedup_key(tenant_a, pagerduty):
    receiver, channel = pagerduty
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    events = [fire(rule, {"service": f"svc-{i}"}) for i in range(3)]
    groups = {queued_group(e) for e in events}
    [outcome] = drain(groups.pop())
    assert outcome.result == "sent"
    keys = [r.json()["dedup_key"] for r in receiver.requests]
    assert keys == [e.instance.fingerprint for e in events]
    assert {r.json()["payload"]["custom_details"]["group_size"] for r in receiver.requests} == {3}


def test_a_retry_after_a_partial_failure_resends_harmlessly_with_the_same_keys(
    tenant_a, http_receiver
):
    receiver = http_receiver(ACCEPTED, Reply(502, "bad gateway"), default=ACCEPTED)
    channel = make_channel(
        tenant_a, "pagerduty", {"routing_key": ROUTING_KEY, "api_url": receiver.url + "/v2/enqueue"}
    )
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    events = [fire(rule, {"service": f"svc-{i}"}) for i in range(2)]
    group = {queued_group(e) for e in events}.pop()

    outcomes = drain(group)

    assert [o.result for o in outcomes] == ["retry", "sent"]
    keys = [r.json()["dedup_key"] for r in receiver.requests]
    first, second = events[0].instance.fingerprint, events[1].instance.fingerprint
    # Attempt 1: first accepted, second got 502. Attempt 2: both again (PagerDuty
    # deduplicates the first onto its open alert: one alert per instance).
    assert keys == [first, second, first, second]
    assert len({k for r, k in zip(receiver.requests, keys, strict=True) if r.answered == 202}) == 2
    assert {r.attempts for r in rows_of(group)} == {2}


def test_400_is_permanent(tenant_a, http_receiver):
    receiver = http_receiver(
        default=Reply(
            400,
            '{"status":"invalid event","message":"Event object is invalid","errors":["Length of \'routing_key\' is incorrect"]}',
        )
    )
    channel = make_channel(
        tenant_a, "pagerduty", {"routing_key": ROUTING_KEY, "api_url": receiver.url + "/v2/enqueue"}
    )
    rule = make_rule(tenant_a)
    rule.channels.add(channel)
    group = queued_group(fire(rule))
    [outcome] = drain(group)
    assert outcome.result == "failed"
    [row] = rows_of(group)
    assert row.last_error.startswith("permanent: PagerDuty answered HTTP 400")
    assert "invalid event" in row.last_error
    assert ROUTING_KEY not in row.last_error
    channel.refresh_from_db()
    assert channel.broken_at is not None


def test_a_test_firing_is_marked_and_never_touches_the_real_alert(tenant_a, pagerduty):
    receiver, channel = pagerduty
    rule = make_rule(tenant_a)
    event = fire(rule, is_test=True)
    rows = notify(event, channels=[channel])
    drain(rows[0].group_key)
    body = receiver.requests[0].json()
    assert body["payload"]["summary"].startswith("[TEST] [FIRING] traversion_high_error_rate")
    assert body["payload"]["custom_details"]["test"] is True
    assert body["dedup_key"].startswith("traversion-test-")
    assert body["dedup_key"] != event.instance.fingerprint


def test_resolved_goes_to_pagerduty_by_default_and_acknowledge_only_to_pagerduty(
    tenant_a, users, pagerduty, http_receiver
):
    _, channel = pagerduty
    slack = make_channel(tenant_a, "slack", {"webhook_url": http_receiver().url})
    rule = make_rule(tenant_a)
    rule.channels.add(channel, slack)
    fired = fire(rule)
    assert {r.channel_id for r in notify(fired)} == {channel.pk, slack.pk}
    assert {r.channel_id for r in notify(acknowledge(fired.instance, users["owner"]))} == {
        channel.pk
    }
    assert {r.channel_id for r in notify(resolve(fired.instance))} == {channel.pk}
