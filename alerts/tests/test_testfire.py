"""The guide's test call, `POST /api/internal/alerts/test` (§Troubleshooting, Alerts Not Firing)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from alerts.choices import AuditAction, NotificationKind, NotificationStatus
from alerts.delivery import deliver_group
from alerts.models import AlertEvent, AlertRule, Notification
from tenants.models import AuditEvent

from .apihelpers import HttpReceiver, make_channel, make_rule

pytestmark = pytest.mark.django_db

#: The guide, verbatim.
GUIDE_CALL = {"ruleName": "traversion_high_error_rate", "testData": {"error_rate": 0.1}}


@pytest.fixture
def slack_receiver():
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def high_error_rate():
    """The default pack's rule, as `make run` loads it: global, PromQL, 5xx ratio > 5 %."""
    call_command("load_default_rules", verbosity=0)
    rule = AlertRule.objects.get(tenant=None, name="traversion_high_error_rate")
    assert (rule.condition_operator, rule.threshold) == (">", 0.05)
    return rule


def test_the_guides_call_renders_sends_and_records_a_test(
    client_for, tenant_a, high_error_rate, slack_receiver
):
    channel = make_channel(tenant_a, "slack", config={"webhook_url": slack_receiver.url + "/h"})
    ops = make_channel(None, "ops-pager", config={"webhook_url": slack_receiver.url + "/ops"})
    high_error_rate.channels.set([ops])

    response = client_for("member").post("/api/internal/alerts/test", GUIDE_CALL, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ruleName"] == "traversion_high_error_rate"
    assert body["value"] == 0.1 and body["conditionMet"] is True
    assert body["sent"] is True and body["dryRun"] is False
    assert body["annotations"]["summary"] == "0.100 of API responses are 5xx"
    # A tenant's test of a global rule reaches the tenant's channels, never the operators'.
    assert [n["channel"] for n in body["notifications"]] == ["slack"]
    rendered = body["notifications"][0]
    assert rendered["status"] == NotificationStatus.QUEUED
    assert rendered["payload"]["text"].startswith("[TEST] [FIRING] traversion_high_error_rate")

    event = AlertEvent.objects.get(pk=body["eventId"])
    assert event.is_test and event.kind == NotificationKind.TEST and event.tenant == tenant_a
    row = Notification.objects.get(pk=rendered["notificationId"])
    assert (row.event, row.channel, row.is_test) == (event, channel, True)

    # Delivery sends exactly what was rendered.
    outcome = deliver_group(row.group_key)
    assert outcome.result == "sent"
    assert [r["path"] for r in slack_receiver.requests] == ["/h"]
    assert slack_receiver.json() == rendered["payload"]
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT

    history = client_for("viewer").get("/api/v1/history/?is_test=true").json()["results"]
    assert [(h["id"], h["is_test"], h["kind"]) for h in history] == [(event.pk, True, "test")]
    audit = AuditEvent.objects.get(action=AuditAction.RULE_TEST_FIRED)
    assert audit.details["rule"] == "traversion_high_error_rate" and audit.details["sent"] is True


def test_an_operator_test_of_a_global_rule_reaches_the_global_channels(
    client_for, tenant_a, high_error_rate
):
    ops = make_channel(None, "ops-pager")
    make_channel(tenant_a, "slack")
    high_error_rate.channels.set([ops])
    response = client_for("operator", tenant="alpha").post(
        "/api/internal/alerts/test", GUIDE_CALL, format="json"
    )
    assert sorted(n["channel"] for n in response.json()["notifications"]) == ["ops-pager", "slack"]


def test_dry_run_renders_without_sending_or_recording(client_for, tenant_a, high_error_rate):
    make_channel(tenant_a, "slack")
    response = client_for("viewer").post(
        "/api/internal/alerts/test", {**GUIDE_CALL, "dryRun": True}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["conditionMet"] is True and body["sent"] is False and body["eventId"] is None
    assert body["notifications"][0]["status"] == "rendered"
    assert body["notifications"][0]["notificationId"] is None
    assert body["notifications"][0]["payload"]["text"].startswith("[TEST]")
    assert not AlertEvent.objects.exists() and not Notification.objects.exists()


def test_condition_not_met_sends_nothing(client_for, tenant_a, high_error_rate):
    make_channel(tenant_a, "slack")
    response = client_for("member").post(
        "/api/internal/alerts/test",
        {"ruleName": "traversion_high_error_rate", "testData": {"error_rate": 0.01}},
        format="json",
    )
    body = response.json()
    assert body["conditionMet"] is False and body["sent"] is False
    assert body["notifications"][0]["status"] == "not_sent"
    assert not AlertEvent.objects.exists() and not Notification.objects.exists()


def test_value_labels_and_the_tenants_own_rule(client_for, tenant_a):
    own = make_channel(tenant_a, "mine")
    make_channel(tenant_a, "other")
    make_rule(
        tenant_a,
        "errors",
        channels=[own],
        condition_operator=">=",
        threshold=3,
        labels={"team": "core"},
    )
    response = client_for("member").post(
        "/api/internal/alerts/test",
        {
            "ruleName": "errors",
            "testData": {"service": "api", "count": 1, "value": 3, "ok": True, "nested": {"a": 1}},
        },
        format="json",
    )
    body = response.json()
    assert body["value"] == 3 and body["conditionMet"] is True
    assert body["labels"] == {"team": "core", "service": "api", "count": "1", "ok": "true"}
    assert [n["channel"] for n in body["notifications"]] == ["mine"]
    event = AlertEvent.objects.get()
    assert event.labels == body["labels"] and event.value == 3


def test_a_rule_without_condition_fires_on_any_data(client_for, tenant_a):
    make_rule(tenant_a, "every_row")
    body = (
        client_for("member")
        .post("/api/internal/alerts/test", {"ruleName": "every_row", "testData": {}}, format="json")
        .json()
    )
    assert body["conditionMet"] is True and body["value"] is None and body["sent"] is True


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"testData": {}},
        {"ruleName": "x", "testData": "not an object"},
        {"ruleName": "x", "testData": {}, "dryRun": "perhaps"},
        {"ruleName": "", "testData": {}},
    ],
)
def test_bad_bodies_are_400(client_for, tenant_a, payload):
    response = client_for("member").post("/api/internal/alerts/test", payload, format="json")
    assert response.status_code == 400
    assert not AlertEvent.objects.exists()
