"""Every alerting endpoint across two tenants and every role: who reads, who writes, and
that each access to the other tenant's objects answers 404, is recorded and is counted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.choices import InstanceState, NotificationKind, NotificationStatus
from alerts.models import AlertEvent, AlertInstance, Notification, Silence, fingerprint_of

from .apihelpers import (
    GOOD_QUERY,
    cross_tenant_counter,
    cross_tenant_events,
    denied_events,
    make_channel,
    make_rule,
    violations_counter,
)

pytestmark = pytest.mark.django_db

ROLES = ["owner", "admin", "member", "viewer", "outsider"]
READERS = {"owner", "admin", "member", "viewer"}
MEMBERS = {"owner", "admin", "member"}
ADMINS = {"owner", "admin"}


def build_tenant_world(tenant, suffix: str) -> dict:
    channel = make_channel(tenant, name=f"slack-{suffix}")
    rule = make_rule(tenant, name=f"rule-{suffix}", channels=[channel])
    labels = {"service": "api"}
    now = timezone.now()
    instance = AlertInstance.objects.create(
        rule=rule,
        tenant=tenant,
        fingerprint=fingerprint_of(rule.pk, labels),
        labels=labels,
        state=InstanceState.FIRING,
        value=3,
        firing_since=now,
        last_state_change_at=now,
    )
    event = AlertEvent.objects.create(
        rule=rule,
        instance=instance,
        tenant=tenant,
        kind=NotificationKind.FIRING,
        from_state=InstanceState.PENDING,
        to_state=InstanceState.FIRING,
        value=3,
        labels=labels,
    )
    notification = Notification.objects.create(
        event=event,
        channel=channel,
        tenant=tenant,
        kind=NotificationKind.FIRING,
        status=NotificationStatus.FAILED,
        idempotency_key=f"key-{suffix}",
        group_key=f"group-{suffix}",
        last_error="Slack answered HTTP 500",
    )
    silence = Silence.objects.create(
        tenant=tenant,
        matchers=[{"name": "service", "op": "=", "value": "db"}],
        ends_at=now + timedelta(hours=1),
    )
    return {
        "channel": channel,
        "rule": rule,
        "instance": instance,
        "event": event,
        "notification": notification,
        "silence": silence,
    }


@pytest.fixture
def world(tenant_a, tenant_b, users):
    return {"a": build_tenant_world(tenant_a, "a"), "b": build_tenant_world(tenant_b, "b")}


LIST_ENDPOINTS = [
    "/api/v1/rules/",
    "/api/v1/instances/",
    "/api/v1/history/",
    "/api/v1/notifications/",
    "/api/v1/silences/",
    "/api/v1/channels/",
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_who_reads_lists_and_sees_only_own_rows(client_for, world, role, path):
    response = client_for(role).get(path)
    if role not in READERS:
        assert response.status_code == 403
        return
    assert response.status_code == 200
    ids = {row["id"] for row in response.json()["results"]}
    kind = {
        "rules": "rule",
        "instances": "instance",
        "history": "event",
        "notifications": "notification",
        "silences": "silence",
        "channels": "channel",
    }[path.split("/")[3]]
    assert ids == {world["a"][kind].pk}


def writes(world) -> list[tuple[str, str, str, dict, set[str]]]:
    """(label, method, path, body, roles allowed) for every write of tenant A's rows."""
    a = world["a"]
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    return [
        ("rule create", "post", "/api/v1/rules/", {"name": "new", "query": GOOD_QUERY}, MEMBERS),
        ("rule update", "patch", f"/api/v1/rules/{a['rule'].pk}/", {"description": "x"}, MEMBERS),
        ("rule toggle", "post", f"/api/v1/rules/{a['rule'].pk}/toggle", {}, MEMBERS),
        (
            "silence create",
            "post",
            "/api/v1/silences/",
            {"matchers": [{"name": "a", "op": "=", "value": "b"}], "ends_at": later},
            MEMBERS,
        ),
        (
            "silence update",
            "patch",
            f"/api/v1/silences/{a['silence'].pk}/",
            {"comment": "x"},
            MEMBERS,
        ),
        ("silence expire", "post", f"/api/v1/silences/{a['silence'].pk}/expire", {}, MEMBERS),
        (
            "acknowledge",
            "post",
            f"/api/v1/instances/{a['instance'].pk}/acknowledge",
            {"comment": "on it"},
            MEMBERS,
        ),
        ("resend", "post", f"/api/v1/notifications/{a['notification'].pk}/resend", {}, MEMBERS),
        (
            "channel create",
            "post",
            "/api/v1/channels/",
            {"name": "mail", "type": "email", "config": {"to": ["ops@example.com"]}},
            ADMINS,
        ),
        (
            "channel update",
            "patch",
            f"/api/v1/channels/{a['channel'].pk}/",
            {"enabled": False},
            ADMINS,
        ),
        (
            "test fire",
            "post",
            "/api/internal/alerts/test",
            {"ruleName": a["rule"].name, "testData": {"value": 5}},
            MEMBERS,
        ),
        (
            "test fire dry run",
            "post",
            "/api/internal/alerts/test",
            {"ruleName": a["rule"].name, "testData": {"value": 5}, "dryRun": True},
            READERS,
        ),
        ("rule delete", "delete", f"/api/v1/rules/{a['rule'].pk}/", {}, MEMBERS),
        ("channel delete", "delete", f"/api/v1/channels/{a['channel'].pk}/", {}, ADMINS),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_who_writes(client_for, world, tenant_a, role):
    for label, method, path, body, allowed in writes(world):
        before = violations_counter(tenant_a)
        denials = denied_events().count()
        response = getattr(client_for(role), method)(path, body, format="json")
        if role in allowed:
            assert response.status_code in (200, 201, 202, 204), (label, response.content)
        else:
            assert response.status_code == 403, (label, response.status_code)
            if role != "outsider":  # an outsider has no tenant to count against
                assert denied_events().count() == denials + 1, label
                assert violations_counter(tenant_a) == before + 1, label


@pytest.mark.parametrize(
    ("role", "can_write_rules", "can_manage_channels"),
    [
        ("owner", True, True),
        ("admin", True, True),
        ("member", True, False),
        ("viewer", False, False),
    ],
)
def test_api_keys_act_with_their_role(
    api_key_for, world, tenant_a, role, can_write_rules, can_manage_channels
):
    client = api_key_for(tenant_a, role)
    assert client.get("/api/v1/rules/").status_code == 200
    created = client.post("/api/v1/rules/", {"name": "k", "query": GOOD_QUERY}, format="json")
    assert created.status_code == (201 if can_write_rules else 403)
    channel = client.post(
        "/api/v1/channels/",
        {"name": "m", "type": "email", "config": {"to": ["a@example.com"]}},
        format="json",
    )
    assert channel.status_code == (201 if can_manage_channels else 403)


def foreign_requests(world) -> list[tuple[str, str, dict]]:
    """Every detail route and action, aimed at tenant B's objects."""
    b = world["b"]
    return [
        ("get", f"/api/v1/rules/{b['rule'].pk}/", {}),
        ("get", f"/api/v1/rules/{b['rule'].name}/", {}),
        ("patch", f"/api/v1/rules/{b['rule'].pk}/", {"description": "mine now"}),
        ("post", f"/api/v1/rules/{b['rule'].pk}/toggle", {}),
        ("post", f"/api/v1/rules/{b['rule'].name}/toggle", {"enabled": False}),
        ("delete", f"/api/v1/rules/{b['rule'].pk}/", {}),
        ("get", f"/api/v1/instances/{b['instance'].pk}/", {}),
        ("post", f"/api/v1/instances/{b['instance'].pk}/acknowledge", {}),
        ("get", f"/api/v1/history/{b['event'].pk}/", {}),
        ("get", f"/api/v1/notifications/{b['notification'].pk}/", {}),
        ("post", f"/api/v1/notifications/{b['notification'].pk}/resend", {}),
        ("get", f"/api/v1/silences/{b['silence'].pk}/", {}),
        ("patch", f"/api/v1/silences/{b['silence'].pk}/", {"comment": "x"}),
        ("post", f"/api/v1/silences/{b['silence'].pk}/expire", {}),
        ("get", f"/api/v1/channels/{b['channel'].pk}/", {}),
        ("patch", f"/api/v1/channels/{b['channel'].pk}/", {"enabled": False}),
        ("post", f"/api/v1/channels/{b['channel'].pk}/test", {}),
        ("delete", f"/api/v1/channels/{b['channel'].pk}/", {}),
        ("post", "/api/internal/alerts/test", {"ruleName": b["rule"].name, "testData": {}}),
    ]


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_every_cross_tenant_access_is_404_recorded_and_counted(client_for, world, tenant_a, role):
    b = world["b"]
    for method, path, body in foreign_requests(world):
        before_rows = cross_tenant_events().count()
        before_metric = cross_tenant_counter(tenant_a)
        response = getattr(client_for(role), method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.status_code)
        assert cross_tenant_events().count() == before_rows + 1, (method, path)
        event = cross_tenant_events().order_by("-id").first()
        assert event.tenant == tenant_a and event.actor == users_name(role)
        assert cross_tenant_counter(tenant_a) == before_metric + 1, (method, path)
    # Nothing of tenant B changed.
    b["rule"].refresh_from_db()
    b["silence"].refresh_from_db()
    b["channel"].refresh_from_db()
    b["instance"].refresh_from_db()
    b["notification"].refresh_from_db()
    assert b["rule"].enabled and b["rule"].description == ""
    assert b["silence"].ends_at > timezone.now() and b["silence"].comment == ""
    assert b["channel"].enabled
    assert b["instance"].acknowledged_at is None
    assert b["notification"].status == NotificationStatus.FAILED


def users_name(role: str) -> str:
    return {"admin": "admin_a"}.get(role, role)


def test_missing_object_is_a_plain_404(client_for, world):
    before = cross_tenant_events().count()
    for path in (
        "/api/v1/rules/999999/",
        "/api/v1/rules/no-such-rule/",
        "/api/v1/silences/999999/",
    ):
        assert client_for("member").get(path).status_code == 404
    response = client_for("member").post(
        "/api/internal/alerts/test", {"ruleName": "nope", "testData": {}}, format="json"
    )
    assert response.status_code == 404
    assert cross_tenant_events().count() == before


def test_foreign_api_key_cannot_reach_tenant_b(api_key_for, world, tenant_a, tenant_b):
    client = api_key_for(tenant_a, "owner")
    before = cross_tenant_counter(tenant_a)
    assert client.get(f"/api/v1/rules/{world['b']['rule'].pk}/").status_code == 404
    # Naming tenant B explicitly with A's key is refused and recorded too.
    assert client.get("/api/v1/rules/", HTTP_X_TENANT="beta").status_code == 404
    assert cross_tenant_counter(tenant_a) == before + 1
    assert cross_tenant_events().count() == 2


def test_unauthenticated_is_refused(api_client, world):
    for path in LIST_ENDPOINTS:
        assert api_client.get(path).status_code == 401
    assert (
        api_client.post("/api/internal/alerts/test", {"ruleName": "x"}, format="json").status_code
        == 401
    )
