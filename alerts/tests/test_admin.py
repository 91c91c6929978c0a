"""The Django admin for alerting: validation on save, actions, masked secrets, tenant scope."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from alerts.channels.base import MASK
from alerts.choices import InstanceState, NotificationKind, NotificationStatus
from alerts.models import (
    AlertEvent,
    AlertInstance,
    AlertRule,
    Notification,
    NotificationChannel,
    Silence,
    fingerprint_of,
)
from tenants.models import Membership

from .apihelpers import GOOD_QUERY, HttpReceiver, make_channel, make_rule

pytestmark = pytest.mark.django_db

RULES = "/admin/alerts/alertrule/"


@pytest.fixture
def operator_client(client, users):
    client.force_login(users["operator"])
    return client


@pytest.fixture
def tenant_admin(client, users, tenant_a):
    """A staff user who owns tenant alpha: no Django permission, the role grants it."""
    user = get_user_model().objects.create_user("alpha_admin", password="pw", is_staff=True)
    Membership.objects.create(user=user, tenant=tenant_a, role="owner")
    client.force_login(user)
    return client


def rule_form(tenant, **changes) -> dict:
    data = {
        "tenant": tenant.pk if tenant else "",
        "name": "admin_rule",
        "severity": "warning",
        "enabled": "on",
        "description": "",
        "runbook_url": "",
        "datasource": "sql",
        "query": GOOD_QUERY,
        "condition_operator": ">",
        "threshold": "5",
        "for_duration": "0",
        "keep_firing_for": "0",
        "cooldown": "",
        "evaluation_interval": "",
        "labels": "{}",
        "annotations": '{"summary": "{{ value }} errors"}',
        "instances-TOTAL_FORMS": "0",
        "instances-INITIAL_FORMS": "0",
        "instances-MIN_NUM_FORMS": "0",
        "instances-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return data


def errors_of(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def test_an_invalid_query_shows_the_datasources_error_and_saves_nothing(operator_client, tenant_a):
    response = operator_client.post(
        RULES + "add/", rule_form(tenant_a, query="DELETE FROM events WHERE 1 = 1")
    )
    page = errors_of(response)
    assert "errorlist" in page and "SELECT" in page
    assert not AlertRule.objects.exists()
    unknown_view = operator_client.post(
        RULES + "add/", rule_form(tenant_a, query="SELECT count(*) FROM requests")
    )
    assert "requests" in errors_of(unknown_view)
    bad_template = operator_client.post(
        RULES + "add/", rule_form(tenant_a, annotations='{"summary": "{% if %}"}')
    )
    assert "summary" in errors_of(bad_template)
    assert not AlertRule.objects.exists()
    ok = operator_client.post(RULES + "add/", rule_form(tenant_a))
    assert ok.status_code == 302, ok.content.decode()[:2000]
    rule = AlertRule.objects.get()
    assert (rule.tenant, rule.query, rule.threshold) == (tenant_a, GOOD_QUERY, 5.0)
    assert rule.created_by.username == "operator"


def test_changelist_filters_search_and_inline_current_alerts(operator_client, tenant_a, tenant_b):
    disk = make_rule(tenant_a, "disk_full", severity="critical", runbook_url="https://r.example")
    make_rule(tenant_b, "latency_b", enabled=False)
    make_rule(None, "traversion_api_down", datasource="prometheus", query="up == 0")
    for path, expected, absent in [
        ("?severity__exact=critical", ["disk_full"], ["latency_b", "traversion_api_down"]),
        (f"?tenant__id__exact={tenant_b.pk}", ["latency_b"], ["disk_full"]),
        ("?datasource__exact=prometheus", ["traversion_api_down"], ["disk_full"]),
        ("?enabled__exact=0", ["latency_b"], ["disk_full"]),
        ("?health__exact=unknown", ["disk_full", "latency_b"], []),
        ("?q=disk", ["disk_full"], ["latency_b"]),
    ]:
        page = operator_client.get(RULES + path).content.decode()
        for name in expected:
            assert name in page, (path, name)
        for name in absent:
            assert f">{name}<" not in page, (path, name)
    AlertInstance.objects.create(
        rule=disk,
        tenant=tenant_a,
        fingerprint=fingerprint_of(disk.pk, {"mount": "/var"}),
        labels={"mount": "/var"},
        state=InstanceState.FIRING,
        value=97,
    )
    AlertInstance.objects.create(
        rule=disk,
        tenant=tenant_a,
        fingerprint=fingerprint_of(disk.pk, {"mount": "/old"}),
        labels={"mount": "/old"},
        state=InstanceState.RESOLVED,
    )
    page = operator_client.get(f"{RULES}{disk.pk}/change/").content.decode()
    assert "current alerts" in page.lower()
    assert "/var" in page and "/old" not in page


def test_actions_enable_disable_silence_and_test_fire(operator_client, tenant_a):
    with HttpReceiver() as slack:
        channel = make_channel(tenant_a, "slack", config={"webhook_url": slack.url + "/x"})
        rule = make_rule(
            tenant_a, "errors", channels=[channel], condition_operator=">", threshold=5
        )

        def act(action):
            response = operator_client.post(
                RULES, {"action": action, "_selected_action": [rule.pk]}, follow=True
            )
            assert response.status_code == 200
            rule.refresh_from_db()
            return response.content.decode()

        act("disable_rules")
        assert rule.enabled is False
        act("enable_rules")
        assert rule.enabled is True

        page = act("silence_one_hour")
        silence = Silence.objects.get()
        assert silence.matchers == [{"name": "alertname", "op": "=", "value": "errors"}]
        assert silence.tenant == tenant_a
        remaining = silence.ends_at - timezone.now()
        assert timedelta(minutes=59) < remaining <= timedelta(hours=1)
        assert "silenced for 1 hour" in page

        page = act("test_fire")
        assert "[TEST] notification queued for slack" in page
        event = AlertEvent.objects.get(is_test=True)
        assert event.kind == NotificationKind.TEST and event.value > 5
        row = Notification.objects.get(event=event)
        assert row.channel == channel and row.is_test
        # A test is never silenced, even by the silence just created.
        assert row.status == NotificationStatus.QUEUED


def test_channel_secrets_are_masked_and_kept(operator_client, tenant_a):
    secret = "https://hooks.slack.com/services/T1/B1/super-secret"
    channel = make_channel(tenant_a, "slack", config={"webhook_url": secret})
    url = f"/admin/alerts/notificationchannel/{channel.pk}/change/"
    page = operator_client.get(url).content.decode()
    assert "super-secret" not in page and MASK in page
    listing = operator_client.get("/admin/alerts/notificationchannel/").content.decode()
    assert "super-secret" not in listing
    form = {
        "tenant": tenant_a.pk,
        "name": "slack-renamed",
        "type": "slack",
        "config": f'{{"webhook_url": "{MASK}"}}',
        "enabled": "on",
        "send_resolved": "unknown",
    }
    response = operator_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    channel.refresh_from_db()
    assert channel.name == "slack-renamed" and channel.config == {"webhook_url": secret}
    bad = operator_client.post(url, {**form, "config": '{"webhook_url": "nope"}'})
    assert "webhook_url" in errors_of(bad)
    channel.refresh_from_db()
    assert channel.config == {"webhook_url": secret}


def test_channel_send_test_action(operator_client, tenant_a):
    with HttpReceiver() as slack:
        channel = make_channel(tenant_a, "ops", config={"webhook_url": slack.url + "/t"})
        response = operator_client.post(
            "/admin/alerts/notificationchannel/",
            {"action": "send_test", "_selected_action": [channel.pk]},
            follow=True,
        )
    assert "ops: test message sent." in response.content.decode().lower()
    assert len(slack.requests) == 1 and slack.json()["text"].startswith("[TEST]")


def test_history_and_ledger_are_read_only(operator_client, tenant_a):
    channel = make_channel(tenant_a, "slack")
    rule = make_rule(tenant_a, "r", channels=[channel])
    event = AlertEvent.objects.create(
        rule=rule, tenant=tenant_a, kind="firing", to_state=InstanceState.FIRING, labels={}
    )
    row = Notification.objects.create(
        event=event, channel=channel, tenant=tenant_a, kind="firing", idempotency_key="k"
    )
    for base, obj in (("alertevent", event), ("notification", row)):
        assert operator_client.get(f"/admin/alerts/{base}/").status_code == 200
        assert operator_client.get(f"/admin/alerts/{base}/add/").status_code == 403
        change = operator_client.get(f"/admin/alerts/{base}/{obj.pk}/change/")
        assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
        assert operator_client.post(f"/admin/alerts/{base}/{obj.pk}/delete/").status_code == 403


def test_silence_admin_validates_matchers(operator_client, tenant_a):
    form = {
        "tenant": tenant_a.pk,
        "matchers": '[{"name": "bad name", "value": "x"}]',
        "starts_at_0": timezone.now().strftime("%Y-%m-%d"),
        "starts_at_1": "00:00:00",
        "ends_at_0": (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%d"),
        "ends_at_1": "00:00:00",
        "comment": "",
    }
    response = operator_client.post("/admin/alerts/silence/add/", form)
    assert "not a valid label name" in errors_of(response)
    assert not Silence.objects.exists()
    form["matchers"] = '[{"name": "alertname", "value": "x", "op": "=~"}]'
    assert operator_client.post("/admin/alerts/silence/add/", form).status_code == 302
    assert Silence.objects.get().matchers == [{"name": "alertname", "op": "=~", "value": "x"}]


def test_tenant_admins_see_and_manage_only_their_tenant(tenant_admin, tenant_a, tenant_b):
    mine = make_rule(tenant_a, "mine")
    theirs = make_rule(tenant_b, "theirs")
    make_rule(None, "global_rule")
    page = tenant_admin.get(RULES).content.decode()
    assert "mine" in page and "theirs" not in page and "global_rule" not in page
    assert "beta" not in page  # not even in the tenant filter
    assert tenant_admin.get(f"{RULES}{mine.pk}/change/").status_code == 200
    # Another tenant's rule "does not exist" for them: the admin redirects to its index.
    foreign = tenant_admin.get(f"{RULES}{theirs.pk}/change/")
    assert foreign.status_code == 302 and foreign["Location"] == "/admin/"
    # Neither another tenant nor a global rule can be created.
    for tenant_value in (tenant_b.pk, ""):
        response = tenant_admin.post(RULES + "add/", {**rule_form(None), "tenant": tenant_value})
        assert response.status_code == 200
    assert not AlertRule.objects.filter(name="admin_rule").exists()
    assert tenant_admin.post(RULES + "add/", rule_form(tenant_a)).status_code == 302
    assert AlertRule.objects.get(name="admin_rule").tenant == tenant_a
    # Channels of another tenant are not offered.
    make_channel(tenant_b, "b-secret-channel")
    add_page = tenant_admin.get(RULES + "add/").content.decode()
    assert "b-secret-channel" not in add_page
    for model in ("notificationchannel", "silence", "alertevent", "notification", "alertinstance"):
        assert tenant_admin.get(f"/admin/alerts/{model}/").status_code == 200, model


def test_staff_without_an_admin_role_sees_nothing(client, users, tenant_a):
    user = get_user_model().objects.create_user("staff_member", password="pw", is_staff=True)
    Membership.objects.create(user=user, tenant=tenant_a, role="member")
    client.force_login(user)
    assert client.get(RULES).status_code == 403
    assert NotificationChannel.objects.count() == 0
