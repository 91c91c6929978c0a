"""Channels through the API: secrets are write-only, configs are the transport's, tests send."""

from __future__ import annotations

import pytest

from alerts.channels.base import MASK
from alerts.choices import AuditAction
from alerts.models import NotificationChannel
from tenants.models import AuditEvent

from .apihelpers import HttpReceiver, make_channel

pytestmark = pytest.mark.django_db


@pytest.fixture
def slack_receiver():
    with HttpReceiver() as receiver:
        yield receiver


SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/very-secret-token"


def test_secrets_never_come_back(client_for, tenant_a):
    client = client_for("admin")
    created = client.post(
        "/api/v1/channels/",
        {"name": "ops-slack", "type": "slack", "config": {"webhook_url": SLACK_URL}},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["config"] == {"webhook_url": MASK}
    assert body["secrets_configured"] == {"webhook_url": True}
    assert "very-secret-token" not in created.content.decode()
    channel = NotificationChannel.objects.get(pk=body["id"])
    assert channel.config == {"webhook_url": SLACK_URL} and channel.tenant == tenant_a
    for path in ("/api/v1/channels/", f"/api/v1/channels/{channel.pk}/"):
        text = client_for("viewer").get(path).content.decode()
        assert "very-secret-token" not in text and MASK in text


def test_update_keeps_a_secret_unless_a_new_one_is_sent(client_for, tenant_a):
    channel = make_channel(tenant_a, "pd", "pagerduty", {"routing_key": "R" * 32})
    client = client_for("owner")
    # What the client was shown, sent back as is: the key stays.
    shown = client.get(f"/api/v1/channels/{channel.pk}/").json()
    assert shown["config"]["routing_key"] == MASK
    put = client.put(
        f"/api/v1/channels/{channel.pk}/",
        {"name": "pd", "type": "pagerduty", "config": shown["config"], "enabled": False},
        format="json",
    )
    assert put.status_code == 200, put.content
    channel.refresh_from_db()
    assert channel.config["routing_key"] == "R" * 32 and channel.enabled is False
    # Omitted: kept too.
    client.patch(f"/api/v1/channels/{channel.pk}/", {"config": {}}, format="json")
    channel.refresh_from_db()
    assert channel.config["routing_key"] == "R" * 32
    # A new value replaces it.
    client.patch(
        f"/api/v1/channels/{channel.pk}/", {"config": {"routing_key": "N" * 32}}, format="json"
    )
    channel.refresh_from_db()
    assert channel.config["routing_key"] == "N" * 32
    updates = AuditEvent.objects.filter(action=AuditAction.CHANNEL_UPDATED, tenant=tenant_a)
    assert updates.count() == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "slack", "config": {}}, "config"),
        ({"type": "slack", "config": {"webhook_url": "not a url"}}, "config"),
        ({"type": "slack", "config": {"webhook_url": MASK}}, "config"),
        ({"type": "slack", "config": {"webhook_url": SLACK_URL, "extra": 1}}, "config"),
        ({"type": "email", "config": {"to": ["not-an-address"]}}, "config"),
        ({"type": "sms", "config": {}}, "type"),
        ({"type": "slack", "config": "https://hooks.slack.com/x"}, "config"),
        ({"type": "slack", "config": {"webhook_url": SLACK_URL}, "name": ""}, "name"),
        ({"type": "slack", "config": {"webhook_url": SLACK_URL}, "name": "42"}, "name"),
    ],
)
def test_invalid_channel_is_400_and_not_stored(client_for, tenant_a, body, field):
    payload = {"name": "bad", **body}
    response = client_for("admin").post("/api/v1/channels/", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not NotificationChannel.objects.exists()


def test_config_errors_name_the_key(client_for, tenant_a):
    response = client_for("admin").post(
        "/api/v1/channels/",
        {"name": "x", "type": "slack", "config": {"webhook_url": "ftp://nope"}},
        format="json",
    )
    assert response.status_code == 400
    assert "webhook_url" in response.json()["config"]


def test_one_fallback_and_unique_names(client_for, tenant_a):
    make_channel(tenant_a, "first").__class__.objects.filter(name="first").update(is_fallback=True)
    client = client_for("admin")
    fallback = client.post(
        "/api/v1/channels/",
        {
            "name": "second",
            "type": "email",
            "config": {"to": ["a@example.com"]},
            "is_fallback": True,
        },
        format="json",
    )
    assert fallback.status_code == 400 and "is_fallback" in fallback.json()
    duplicate = client.post(
        "/api/v1/channels/",
        {"name": "first", "type": "email", "config": {"to": ["a@example.com"]}},
        format="json",
    )
    assert duplicate.status_code == 400 and "name" in duplicate.json()
    assert NotificationChannel.objects.count() == 1


def test_global_channels_are_read_only_to_tenants(client_for, tenant_a):
    channel = make_channel(None, "global-slack")
    listed = client_for("viewer").get("/api/v1/channels/").json()["results"]
    assert [(c["name"], c["is_global"], c["config"]) for c in listed] == [
        ("global-slack", True, {"webhook_url": MASK})
    ]
    owner = client_for("owner")
    assert (
        owner.patch(
            f"/api/v1/channels/{channel.pk}/", {"enabled": False}, format="json"
        ).status_code
        == 403
    )
    assert owner.post(f"/api/v1/channels/{channel.pk}/test", format="json").status_code == 403
    assert owner.delete(f"/api/v1/channels/{channel.pk}/").status_code == 403
    channel.refresh_from_db()
    assert channel.enabled


def test_send_test_reaches_slack(client_for, tenant_a, slack_receiver):
    channel = make_channel(tenant_a, "ops", config={"webhook_url": slack_receiver.url + "/hook"})
    response = client_for("admin").post(
        f"/api/v1/channels/{channel.pk}/test", {"message": "hello from the runbook"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "sent" and body["error"] == ""
    assert len(slack_receiver.requests) == 1
    assert slack_receiver.requests[0]["path"] == "/hook"
    sent = slack_receiver.json()
    assert sent["text"].startswith("[TEST] ")
    assert "hello from the runbook" in sent["text"]
    assert body["payload"]["text"] == sent["text"]
    channel.refresh_from_db()
    assert channel.last_success_at is not None and channel.broken_at is None
    assert (
        AuditEvent.objects.filter(action=AuditAction.CHANNEL_TESTED).get().details["status"]
        == "sent"
    )


def test_send_test_reports_the_providers_error(client_for, tenant_a):
    with HttpReceiver(status=404, body=b"no_service") as receiver:
        channel = make_channel(tenant_a, "gone", config={"webhook_url": receiver.url + "/x"})
        response = client_for("owner").post(f"/api/v1/channels/{channel.pk}/test", format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed"
    assert "404" in body["error"] and "no_service" in body["error"]
    assert receiver.url not in body["error"]
    channel.refresh_from_db()
    assert "404" in channel.last_error


def test_members_cannot_manage_channels(client_for, tenant_a):
    channel = make_channel(tenant_a, "c")
    member = client_for("member")
    assert member.get(f"/api/v1/channels/{channel.pk}/").status_code == 200
    assert member.post(f"/api/v1/channels/{channel.pk}/test", format="json").status_code == 403
    assert member.delete(f"/api/v1/channels/{channel.pk}/").status_code == 403
    assert NotificationChannel.objects.filter(pk=channel.pk).exists()
