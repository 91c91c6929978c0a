"""The live board page, its snapshot endpoint and its login page, across tenants and roles."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from alerts.choices import InstanceState
from alerts.models import Silence
from tenants.choices import AuditAction
from tenants.models import AuditEvent

from .live_helpers import RUNBOOK, acknowledge, make_instance, make_rule

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="live-config" type="application/json">') + len(
        '<script id="live-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


@pytest.fixture
def board_rows(tenant_a, tenant_b, users):
    """A's board: a critical firing, a warning pending, a security flapping (acknowledged);
    off the board: A's resolved instance and all of B's."""
    critical = make_rule(tenant_a)
    warning = make_rule(tenant_a, name="traversion_high_p95_latency", severity="warning")
    security = make_rule(
        tenant_a, name="traversion_cross_tenant_access", severity="security", runbook_url=""
    )
    rows = {
        "firing": make_instance(critical, {"service": "checkout"}),
        "pending": make_instance(warning, {"service": "search"}, state=InstanceState.PENDING),
        "flapping": make_instance(security, {"ip": "203.0.113.9"}, state=InstanceState.FLAPPING),
        "resolved": make_instance(critical, {"service": "cart"}, state=InstanceState.RESOLVED),
        "other_tenant": make_instance(make_rule(tenant_b), {"service": "checkout"}),
    }
    acknowledge(rows["flapping"], users["member"], "looking")
    return rows


def test_page_and_snapshot_need_a_login(board_rows):
    client = Client()
    page = client.get("/alerts/live/")
    assert page.status_code == 302
    assert page["Location"] == "/alerts/live/login/?next=/alerts/live/"
    snapshot = client.get("/alerts/live/snapshot.json")
    assert snapshot.status_code == 401
    assert snapshot.json() == {"detail": "Authentication credentials were not provided."}


def test_login_page_lets_a_non_staff_member_in(users):
    client = Client()
    form = client.get("/alerts/live/login/?next=/alerts/live/")
    assert form.status_code == 200
    assert b'name="password"' in form.content
    bad = client.post("/alerts/live/login/", {"username": "member", "password": "wrong"})
    assert bad.status_code == 200
    assert b"Please enter a correct username and password" in bad.content
    response = client.post(
        "/alerts/live/login/",
        {"username": "member", "password": "pw-member", "next": "/alerts/live/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/alerts/live/"
    assert client.get("/alerts/live/").status_code == 200
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN, actor="member").count() == 2


def test_snapshot_lists_only_the_tenants_board_by_severity(board_rows, users):
    response = logged_in(users["viewer"]).get("/alerts/live/snapshot.json")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    data = response.json()
    assert data["tenant"] == {"slug": "alpha", "name": "Alpha"}
    assert data["severities"] == ["critical", "security", "warning", "info"]
    assert [(i["id"], i["severity"], i["state"]) for i in data["instances"]] == [
        (board_rows["firing"].pk, "critical", "firing"),
        (board_rows["flapping"].pk, "security", "flapping"),
        (board_rows["pending"].pk, "warning", "pending"),
    ]
    firing, flapping, pending = data["instances"]
    assert firing["runbook_url"] == RUNBOOK
    assert firing["value"] == 0.12
    assert firing["labels"] == {"service": "checkout"}
    assert firing["started_at"] == board_rows["firing"].firing_since.isoformat()
    assert pending["started_at"] == board_rows["pending"].pending_since.isoformat()
    assert (flapping["acknowledged"], flapping["acknowledged_by"], flapping["ack_comment"]) == (
        True,
        "member",
        "looking",
    )
    assert firing["acknowledged"] is False
    assert {i["silenced"] for i in data["instances"]} == {False}


def test_snapshot_shows_matching_silences_only(board_rows, tenant_a, tenant_b, users):
    now = timezone.now()
    own = Silence.objects.create(
        tenant=tenant_a,
        matchers=[{"name": "service", "op": "=", "value": "checkout"}],
        ends_at=now + timedelta(hours=1),
    )
    # B's silence matches the same labels but is B's: A's board is not affected by it.
    Silence.objects.create(
        tenant=tenant_b,
        matchers=[{"name": "alertname", "op": "=~", "value": "traversion_.*"}],
        ends_at=now + timedelta(hours=1),
    )
    # A global silence (operators) applies to every tenant.
    global_silence = Silence.objects.create(
        tenant=None,
        matchers=[{"name": "severity", "op": "=", "value": "security"}],
        ends_at=now + timedelta(minutes=30),
    )
    # An expired one does nothing.
    Silence.objects.create(
        tenant=tenant_a,
        matchers=[{"name": "service", "op": "=", "value": "search"}],
        starts_at=now - timedelta(hours=2),
        ends_at=now - timedelta(hours=1),
    )
    data = logged_in(users["member"]).get("/alerts/live/snapshot.json").json()
    silenced = {i["id"]: (i["silenced"], i["silence_id"]) for i in data["instances"]}
    assert silenced == {
        board_rows["firing"].pk: (True, own.pk),
        board_rows["flapping"].pk: (True, global_silence.pk),
        board_rows["pending"].pk: (False, None),
    }
    firing = next(i for i in data["instances"] if i["id"] == board_rows["firing"].pk)
    assert firing["silenced_until"] == own.ends_at.isoformat()


def test_page_carries_the_tenant_and_the_role(board_rows, users):
    response = logged_in(users["member"]).get("/alerts/live/")
    assert response.status_code == 200
    config = page_config(response)
    assert config["tenant"] == {"slug": "alpha", "name": "Alpha"}
    assert config["socketPath"] == "/ws/alerts/live/?tenant=alpha"
    assert config["snapshotUrl"] == "/alerts/live/snapshot.json?tenant=alpha"
    assert config["apiBase"] == "/api/v1/"
    assert config["canWrite"] is True
    assert config["silenceMinutes"] == 60
    assert config["csrfToken"]
    assert b"/static/alerts/live.js" in response.content
    viewer = page_config(logged_in(users["viewer"]).get("/alerts/live/"))
    assert viewer["canWrite"] is False


def test_other_tenant_is_404_and_recorded(board_rows, users):
    client = logged_in(users["member_b"])
    assert client.get("/alerts/live/?tenant=alpha").status_code == 404
    snapshot = client.get("/alerts/live/snapshot.json?tenant=alpha")
    assert snapshot.status_code == 404
    assert snapshot.json() == {"detail": "tenant not found"}
    attempts = AuditEvent.objects.filter(action=AuditAction.CROSS_TENANT, actor="member_b")
    assert [e.details["requested_tenant"] for e in attempts] == ["alpha", "alpha"]
    # Their own board is fine and shows only B.
    own = client.get("/alerts/live/snapshot.json").json()
    assert [i["id"] for i in own["instances"]] == [board_rows["other_tenant"].pk]


def test_outsider_has_no_board(users):
    client = logged_in(users["outsider"])
    assert client.get("/alerts/live/").status_code == 403
    assert client.get("/alerts/live/snapshot.json").status_code == 403


def test_superuser_picks_any_tenant(board_rows, users):
    client = logged_in(users["operator"])
    picker = client.get("/alerts/live/")
    assert picker.status_code == 200
    assert b'href="?tenant=alpha"' in picker.content
    assert b'href="?tenant=beta"' in picker.content
    assert b"live-config" not in picker.content
    assert client.get("/alerts/live/snapshot.json").status_code == 400
    config = page_config(client.get("/alerts/live/?tenant=beta"))
    assert config["tenant"]["slug"] == "beta"
    assert config["canWrite"] is True
    data = client.get("/alerts/live/snapshot.json?tenant=beta").json()
    assert [i["id"] for i in data["instances"]] == [board_rows["other_tenant"].pk]


def test_board_script_is_served(users):
    response = logged_in(users["member"]).get("/static/alerts/live.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"snapshotUrl" in body
