"""Alerts pushed by Prometheus (Alertmanager API v2) and Alertmanager (webhook v4)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from alerts.choices import Datasource, InstanceState, NotificationKind, NotificationStatus
from alerts.models import AlertEvent, AlertInstance, AlertRule, Notification, Silence
from tenants.choices import AuditAction
from tenants.models import ApiKey, AuditEvent

from .apihelpers import cross_tenant_counter, make_channel, make_rule

pytestmark = pytest.mark.django_db


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prometheus_alert(name="HighLatency", ends_in=timedelta(minutes=4), **labels) -> dict:
    """An alert exactly as Prometheus's notifier posts it (endsAt = now + 4 resend delays)."""
    now = timezone.now()
    return {
        "labels": {"alertname": name, "severity": "warning", "instance": "api-1:9100", **labels},
        "annotations": {"summary": f"{name} on api-1", "description": "p95 above 1s"},
        "startsAt": iso(now - timedelta(minutes=1)),
        "endsAt": iso(now + ends_in),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


@pytest.fixture
def key(tenant_a):
    _, raw = ApiKey.issue(tenant_a, "prometheus", role="member")
    return raw


@pytest.fixture
def slack(tenant_a):
    return make_channel(tenant_a, "slack")


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def push(api_client, alerts, headers, path="/api/v2/alerts"):
    return api_client.post(path, alerts, format="json", **headers)


def test_prometheus_push_becomes_a_firing_instance_with_history_and_ledger(
    api_client, tenant_a, key, slack
):
    response = push(api_client, [prometheus_alert()], bearer(key))
    assert response.status_code == 200, response.content
    assert response.json() == {
        "success": True,
        "received": 1,
        "firing": 1,
        "resolved": 0,
        "rejected": [],
    }
    rule = AlertRule.objects.get(tenant=tenant_a, name="HighLatency")
    assert rule.datasource == Datasource.EXTERNAL and rule.severity == "warning"
    assert list(rule.channels.all()) == [slack]
    instance = AlertInstance.objects.get(rule=rule)
    assert instance.state == InstanceState.FIRING
    assert instance.tenant == tenant_a
    assert instance.labels == {"severity": "warning", "instance": "api-1:9100"}
    assert instance.annotations["summary"] == "HighLatency on api-1"
    assert instance.annotations["generator_url"].startswith("http://prometheus:9090/")
    event = AlertEvent.objects.get(rule=rule, to_state=InstanceState.FIRING)
    assert event.annotations["summary"] == "HighLatency on api-1"
    row = Notification.objects.get(event=event)
    assert (row.channel, row.status, row.kind) == (slack, NotificationStatus.QUEUED, "firing")


def test_repeated_pushes_deduplicate_by_labels(api_client, tenant_a, key, slack):
    for _ in range(3):
        assert push(api_client, [prometheus_alert()], bearer(key)).status_code == 200
    push(api_client, [prometheus_alert(instance="api-2:9100")], bearer(key))
    rule = AlertRule.objects.get(name="HighLatency")
    assert AlertRule.objects.filter(datasource=Datasource.EXTERNAL).count() == 1
    assert AlertInstance.objects.filter(rule=rule).count() == 2
    # One firing transition per label set, so one notification each.
    assert AlertEvent.objects.filter(rule=rule, to_state=InstanceState.FIRING).count() == 2
    assert Notification.objects.filter(kind=NotificationKind.FIRING).count() == 2


def test_ends_at_in_the_past_resolves(api_client, tenant_a, key, slack):
    push(api_client, [prometheus_alert()], bearer(key))
    resolved = prometheus_alert(ends_in=-timedelta(seconds=5))
    response = push(api_client, [resolved], bearer(key))
    assert response.json()["resolved"] == 1
    instance = AlertInstance.objects.get(rule__name="HighLatency")
    assert instance.state == InstanceState.RESOLVED
    assert AlertEvent.objects.filter(
        instance=instance, from_state=InstanceState.FIRING, to_state=InstanceState.RESOLVED
    ).exists()
    # A resolve for an alert never seen changes nothing.
    push(api_client, [prometheus_alert("NeverFired", ends_in=-timedelta(seconds=5))], bearer(key))
    assert not AlertInstance.objects.filter(rule__name="NeverFired").exists()


@pytest.mark.parametrize("scheme", ["bearer", "basic", "api-key"])
def test_api_key_in_every_form_prometheus_can_send(api_client, tenant_a, key, scheme):
    headers = {
        "bearer": bearer(key),
        "basic": basic("prometheus", key),
        "api-key": {"HTTP_AUTHORIZATION": f"Api-Key {key}"},
    }[scheme]
    assert push(api_client, [prometheus_alert()], headers).status_code == 200
    assert AlertInstance.objects.filter(tenant=tenant_a).count() == 1


def test_refused_credentials(api_client, tenant_a):
    assert push(api_client, [prometheus_alert()], {}).status_code == 401
    assert push(api_client, [prometheus_alert()], bearer("trv_nope_nope")).status_code == 401
    assert push(api_client, [prometheus_alert()], bearer("not-a-jwt")).status_code == 401
    assert push(api_client, [prometheus_alert()], basic("x", "wrong")).status_code == 401
    _, viewer_key = ApiKey.issue(tenant_a, "viewer", role="viewer")
    assert push(api_client, [prometheus_alert()], bearer(viewer_key)).status_code == 403
    assert not AlertInstance.objects.exists()
    failures = AuditEvent.objects.filter(action=AuditAction.LOGIN, result="failure")
    assert failures.count() == 1  # the unknown API key


def test_a_tenant_label_naming_another_tenant_is_refused_and_counted(
    api_client, tenant_a, tenant_b, key
):
    before = cross_tenant_counter(tenant_a)
    response = push(
        api_client,
        [prometheus_alert(tenant="beta"), prometheus_alert("Ok", tenant="alpha")],
        bearer(key),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["firing"] == 1
    assert body["rejected"][0]["index"] == 0 and "beta" in body["rejected"][0]["reason"]
    assert not AlertRule.objects.filter(tenant=tenant_b).exists()
    assert AlertInstance.objects.get().tenant == tenant_a
    assert AuditEvent.objects.filter(action=AuditAction.CROSS_TENANT, tenant=tenant_a).count() == 1
    assert cross_tenant_counter(tenant_a) == before + 1
    # By id too; a tenant that does not exist is refused without counting an attack.
    response = push(
        api_client,
        [prometheus_alert(tenant_id=str(tenant_b.pk)), prometheus_alert(tenant="nowhere")],
        bearer(key),
    )
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1]
    assert cross_tenant_counter(tenant_a) == before + 2


def test_platform_token_routes_by_tenant_label(api_client, settings, tenant_a, tenant_b):
    settings.ALERT_RECEIVER_TOKEN = "platform-secret-token"
    global_channel = make_channel(None, "ops")
    b_channel = make_channel(tenant_b, "b-slack")
    response = push(
        api_client,
        [
            prometheus_alert("TenantQuota", tenant="beta"),
            prometheus_alert("ApiDown"),
            prometheus_alert("Ghost", tenant="no-such-tenant"),
        ],
        bearer("platform-secret-token"),
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["firing"], len(body["rejected"])) == (2, 1)
    quota = AlertRule.objects.get(name="TenantQuota")
    assert quota.tenant == tenant_b and list(quota.channels.all()) == [b_channel]
    assert AlertInstance.objects.get(rule=quota).tenant == tenant_b
    api_down = AlertRule.objects.get(name="ApiDown")
    assert api_down.tenant is None and list(api_down.channels.all()) == [global_channel]
    # Our own metrics name tenants by id (`tenant_id`): routed the same way.
    by_id = push(
        api_client,
        [prometheus_alert("QuotaById", tenant_id=str(tenant_b.pk))],
        bearer("platform-secret-token"),
    )
    assert by_id.json()["firing"] == 1
    assert AlertRule.objects.get(name="QuotaById").tenant == tenant_b
    # The token also works as a basic-auth password; a wrong one does not.
    assert (
        push(api_client, [prometheus_alert("X")], basic("am", "platform-secret-token")).status_code
        == 200
    )
    assert push(api_client, [prometheus_alert("Y")], bearer("platform-wrong")).status_code == 401


def test_invalid_payloads_are_400_and_store_nothing(api_client, tenant_a, key):
    no_name = prometheus_alert()
    del no_name["labels"]["alertname"]
    bad_label = prometheus_alert()
    bad_label["labels"]["bad-label"] = "x"
    bad_time = prometheus_alert()
    bad_time["endsAt"] = "tomorrow"
    for body in ([no_name], [bad_label], [bad_time], {"labels": {}}, "nope", [{"labels": "x"}]):
        response = push(api_client, body, bearer(key))
        assert response.status_code == 400, (body, response.content)
    assert not AlertRule.objects.exists() and not AlertInstance.objects.exists()


def test_silences_apply_to_pushed_alerts(api_client, tenant_a, key, slack):
    Silence.objects.create(
        tenant=tenant_a,
        matchers=[{"name": "alertname", "op": "=", "value": "HighLatency"}],
        ends_at=timezone.now() + timedelta(hours=1),
    )
    push(api_client, [prometheus_alert()], bearer(key))
    row = Notification.objects.get()
    assert row.status == NotificationStatus.SUPPRESSED_SILENCE
    assert AlertInstance.objects.get().state == InstanceState.FIRING  # never stops evaluation


def test_a_rule_evaluated_here_is_not_taken_over(api_client, tenant_a, key):
    make_rule(tenant_a, "HighLatency")
    response = push(api_client, [prometheus_alert()], bearer(key))
    assert response.status_code == 200
    assert "evaluated by Traversion" in response.json()["rejected"][0]["reason"]
    assert not AlertInstance.objects.exists()


def test_a_disabled_external_rule_takes_nothing(api_client, tenant_a, key):
    push(api_client, [prometheus_alert()], bearer(key))
    AlertRule.objects.filter(name="HighLatency").update(enabled=False)
    response = push(api_client, [prometheus_alert(instance="api-9")], bearer(key))
    assert response.json()["rejected"][0]["reason"] == "rule 'HighLatency' is disabled"
    assert AlertInstance.objects.count() == 1


def webhook_payload(status: str, alerts: list[dict]) -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "traversion",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


def test_alertmanager_webhook_v4_fires_and_resolves(api_client, tenant_a, key, slack):
    alert = {
        "status": "firing",
        "labels": {"alertname": "DiskFull", "severity": "critical", "mount": "/"},
        "annotations": {"summary": "Disk / is 95% full", "runbook_url": "https://r.example/disk"},
        "startsAt": iso(timezone.now() - timedelta(minutes=3)),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "c2d9a3f1b0e4a7d6",
    }
    response = push(api_client, webhook_payload("firing", [alert]), bearer(key), "/webhook/alerts")
    assert response.status_code == 200, response.content
    assert response.json()["firing"] == 1
    rule = AlertRule.objects.get(name="DiskFull")
    assert rule.severity == "critical" and rule.runbook_url == "https://r.example/disk"
    instance = AlertInstance.objects.get(rule=rule)
    assert instance.state == InstanceState.FIRING and instance.labels["mount"] == "/"

    resolved = {**alert, "status": "resolved", "endsAt": iso(timezone.now())}
    response = push(
        api_client, webhook_payload("resolved", [resolved]), bearer(key), "/webhook/alerts"
    )
    assert response.json()["resolved"] == 1
    instance.refresh_from_db()
    assert instance.state == InstanceState.RESOLVED


def test_webhook_version_must_be_4(api_client, tenant_a, key):
    body = webhook_payload("firing", [])
    body["version"] = "3"
    response = push(api_client, body, bearer(key), "/webhook/alerts")
    assert response.status_code == 400 and "version" in response.json()
