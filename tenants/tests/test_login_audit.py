from __future__ import annotations

import pytest

from tenants.choices import AuditAction, AuthMethod, AuthResult
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def logins():
    return list(
        AuditEvent.objects.filter(action=AuditAction.LOGIN)
        .order_by("id")
        .values_list("actor", "method", "result", "ip_address")
    )


def test_admin_login_success_and_failure_are_audited(client, users):
    bad = client.post(
        "/admin/login/", {"username": "operator", "password": "nope"}, REMOTE_ADDR="192.0.2.7"
    )
    assert bad.status_code == 200  # the form is shown again
    good = client.post(
        "/admin/login/",
        {"username": "operator", "password": "pw-operator"},
        REMOTE_ADDR="192.0.2.8",
    )
    assert good.status_code == 302
    assert logins() == [
        ("operator", AuthMethod.SESSION, AuthResult.FAILURE, "192.0.2.7"),
        ("operator", AuthMethod.SESSION, AuthResult.SUCCESS, "192.0.2.8"),
    ]


def test_unknown_user_failure_has_no_tenant(api_client, db):
    api_client.post("/api/v1/auth/token/", {"username": "ghost", "password": "x"}, format="json")
    event = AuditEvent.objects.get(action=AuditAction.LOGIN)
    assert event.tenant is None
    assert (event.actor, event.result) == ("ghost", AuthResult.FAILURE)


def test_session_authenticates_the_api(client, users):
    client.login(username="member", password="pw-member")
    response = client.get("/api/v1/tenants/")
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()["results"]] == ["alpha"]
