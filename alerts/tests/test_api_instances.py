"""Instances, history and the ledger through the API: filters, acknowledge, resend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.choices import AuditAction, InstanceState, NotificationKind, NotificationStatus
from alerts.models import AlertEvent, AlertInstance, Notification, fingerprint_of
from tenants.models import AuditEvent

from .apihelpers import make_channel, make_rule

pytestmark = pytest.mark.django_db


def instance(rule, state, **labels):
    now = timezone.now()
    return AlertInstance.objects.create(
        rule=rule,
        tenant=rule.tenant,
        fingerprint=fingerprint_of(rule.pk, labels),
        labels=labels,
        state=state,
        value=1,
        firing_since=now if state == InstanceState.FIRING else None,
        last_state_change_at=now,
    )


def event(rule, inst, to_state, at, kind=NotificationKind.FIRING, is_test=False):
    return AlertEvent.objects.create(
        rule=rule,
        instance=inst,
        tenant=rule.tenant,
        timestamp=at,
        kind=kind,
        to_state=to_state,
        labels=inst.labels if inst else {},
        is_test=is_test,
    )


@pytest.fixture
def alerts(tenant_a, tenant_b):
    crit = make_rule(tenant_a, "disk", severity="critical", runbook_url="https://r.example/d")
    warn = make_rule(tenant_a, "latency", severity="warning")
    other = make_rule(tenant_b, "b-rule")
    return {
        "disk_db": instance(crit, InstanceState.FIRING, service="db", env="prod"),
        "disk_api": instance(crit, InstanceState.RESOLVED, service="api", env="prod"),
        "lat_api": instance(warn, InstanceState.PENDING, service="api", env="dev"),
        "b": instance(other, InstanceState.FIRING, service="db", env="prod"),
        "rules": (crit, warn, other),
    }


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_instance_filters(client_for, alerts):
    client = client_for("viewer")
    a = alerts
    assert ids(client.get("/api/v1/instances/")) == {
        a["disk_db"].pk,
        a["disk_api"].pk,
        a["lat_api"].pk,
    }
    assert ids(client.get("/api/v1/instances/?state=firing")) == {a["disk_db"].pk}
    assert ids(client.get("/api/v1/instances/?state=firing&state=pending")) == {
        a["disk_db"].pk,
        a["lat_api"].pk,
    }
    assert ids(client.get("/api/v1/instances/?severity=critical")) == {
        a["disk_db"].pk,
        a["disk_api"].pk,
    }
    assert ids(client.get("/api/v1/instances/?label=service=api")) == {
        a["disk_api"].pk,
        a["lat_api"].pk,
    }
    assert ids(client.get("/api/v1/instances/?label=service=api&label=env=prod")) == {
        a["disk_api"].pk
    }
    assert ids(client.get("/api/v1/instances/?label=service=db")) == {a["disk_db"].pk}
    assert ids(client.get("/api/v1/instances/?rule_name=latency")) == {a["lat_api"].pk}
    for bad in ("?label=service", "?label=bad label=x", "?state=exploded"):
        assert client.get("/api/v1/instances/" + bad).status_code == 400, bad
    row = client.get(f"/api/v1/instances/{a['disk_db'].pk}/").json()
    assert row["rule"]["name"] == "disk" and row["labels"] == {"service": "db", "env": "prod"}


def test_acknowledge(client_for, alerts, tenant_a):
    target = alerts["disk_db"]
    response = client_for("member").post(
        f"/api/v1/instances/{target.pk}/acknowledge", {"comment": "looking"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["acknowledged_by"] == "member" and body["ack_comment"] == "looking"
    target.refresh_from_db()
    assert target.acknowledged_at is not None and target.acknowledged_by.username == "member"
    assert AuditEvent.objects.filter(
        action=AuditAction.INSTANCE_ACKNOWLEDGED, tenant=tenant_a
    ).exists()
    assert AlertEvent.objects.filter(instance=target, kind=NotificationKind.ACKNOWLEDGE).exists()


def test_acknowledge_by_api_key_names_the_key(api_key_for, alerts, tenant_a):
    client = api_key_for(tenant_a, "member")
    target = alerts["disk_db"]
    response = client.post(
        f"/api/v1/instances/{target.pk}/acknowledge", {"comment": "bot"}, format="json"
    )
    assert response.status_code == 200, response.content
    target.refresh_from_db()
    assert target.acknowledged_by is None and target.ack_comment == "bot"
    recorded = AlertEvent.objects.get(instance=target, kind=NotificationKind.ACKNOWLEDGE)
    assert recorded.message.startswith("acknowledged by api-key:")
    again = client.post(f"/api/v1/instances/{target.pk}/acknowledge", format="json")
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]


def test_history_filters_by_rule_state_and_time(client_for, alerts):
    crit, warn, other = alerts["rules"]
    now = timezone.now()
    old = event(crit, alerts["disk_db"], InstanceState.PENDING, now - timedelta(hours=3))
    fired = event(crit, alerts["disk_db"], InstanceState.FIRING, now - timedelta(hours=1))
    lat = event(warn, alerts["lat_api"], InstanceState.PENDING, now - timedelta(minutes=5))
    test = event(warn, None, InstanceState.FIRING, now, NotificationKind.TEST, is_test=True)
    event(other, alerts["b"], InstanceState.FIRING, now)
    client = client_for("viewer")
    assert ids(client.get("/api/v1/history/")) == {old.pk, fired.pk, lat.pk, test.pk}
    assert ids(client.get(f"/api/v1/history/?rule={crit.pk}")) == {old.pk, fired.pk}
    assert ids(client.get("/api/v1/history/?rule_name=latency")) == {lat.pk, test.pk}
    assert ids(client.get("/api/v1/history/?state=firing")) == {fired.pk, test.pk}
    since = (now - timedelta(hours=2)).isoformat()
    until = (now - timedelta(minutes=30)).isoformat()
    assert ids(client.get("/api/v1/history/", {"since": since, "until": until})) == {fired.pk}
    assert ids(client.get("/api/v1/history/?is_test=true")) == {test.pk}
    assert ids(client.get("/api/v1/history/?label=service=api")) == {lat.pk}
    assert client.get("/api/v1/history/?since=yesterday").status_code == 400
    # Offsets PostgreSQL cannot store (beyond ±15:59) are fine once in UTC; a moment that
    # UTC cannot hold is a 400, never a 500.
    for odd in ("3864-08-26T16:07:07-20:06", "0178-05-22T11:28:23-21:29"):
        assert client.get("/api/v1/history/", {"until": odd}).status_code == 200, odd
        assert client.get("/api/v1/notifications/", {"since": odd}).status_code == 200, odd
    assert client.get("/api/v1/history/", {"since": "0001-01-01T00:00:00+05:00"}).status_code == 400
    listed = client.get("/api/v1/history/").json()["results"]
    assert [row["id"] for row in listed] == [test.pk, lat.pk, fired.pk, old.pk]


def ledger_row(evt, channel, status, suffix):
    return Notification.objects.create(
        event=evt,
        channel=channel,
        tenant=evt.tenant,
        kind=evt.kind,
        status=status,
        idempotency_key=f"k-{suffix}",
        group_key=f"g-{suffix}",
        last_error="" if status != NotificationStatus.FAILED else "Slack answered HTTP 500",
    )


def test_ledger_filters_and_resend(
    client_for, alerts, tenant_a, django_capture_on_commit_callbacks
):
    crit, warn, _ = alerts["rules"]
    slack = make_channel(tenant_a, "slack")
    mail = make_channel(tenant_a, "mail", "email", {"to": ["a@example.com"]})
    now = timezone.now()
    e1 = event(crit, alerts["disk_db"], InstanceState.FIRING, now)
    e2 = event(warn, alerts["lat_api"], InstanceState.FIRING, now)
    failed = ledger_row(e1, slack, NotificationStatus.FAILED, 1)
    sent = ledger_row(e1, mail, NotificationStatus.SENT, 2)
    silenced = ledger_row(e2, slack, NotificationStatus.SUPPRESSED_SILENCE, 3)
    client = client_for("viewer")
    assert ids(client.get("/api/v1/notifications/")) == {failed.pk, sent.pk, silenced.pk}
    assert ids(client.get("/api/v1/notifications/?status=failed")) == {failed.pk}
    assert ids(client.get(f"/api/v1/notifications/?channel={mail.pk}")) == {sent.pk}
    assert ids(client.get("/api/v1/notifications/?channel_type=slack")) == {failed.pk, silenced.pk}
    assert ids(client.get("/api/v1/notifications/?kind=firing")) == {
        failed.pk,
        sent.pk,
        silenced.pk,
    }
    assert ids(client.get(f"/api/v1/notifications/?rule={warn.pk}")) == {silenced.pk}

    member = client_for("member")
    with django_capture_on_commit_callbacks() as scheduled:
        response = member.post(f"/api/v1/notifications/{failed.pk}/resend", format="json")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == NotificationStatus.QUEUED
    failed.refresh_from_db()
    assert failed.status == NotificationStatus.QUEUED and "was failed" in failed.last_error
    assert len(scheduled) == 1  # delivery of its group is scheduled on commit
    assert member.post(f"/api/v1/notifications/{silenced.pk}/resend").status_code == 202
    conflict = member.post(f"/api/v1/notifications/{sent.pk}/resend")
    assert conflict.status_code == 409
    sent.refresh_from_db()
    assert sent.status == NotificationStatus.SENT
    assert AuditEvent.objects.filter(action=AuditAction.NOTIFICATION_RESENT).count() == 2
