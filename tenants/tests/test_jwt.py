from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from tenants.choices import AuditAction, AuthMethod, AuthResult
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_obtain_and_use_and_refresh(users, api_client, tenant_a):
    response = api_client.post(
        "/api/v1/auth/token/", {"username": "member", "password": "pw-member"}, format="json"
    )
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    listed = api_client.get("/api/v1/tenants/")
    assert listed.status_code == 200
    assert [t["slug"] for t in listed.json()["results"]] == ["alpha"]

    refreshed = api_client.post(
        "/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["access"] != ""

    event = AuditEvent.objects.get(action=AuditAction.LOGIN)
    assert (event.actor, event.method, event.result) == (
        "member",
        AuthMethod.JWT,
        AuthResult.SUCCESS,
    )
    assert event.ip_address == "127.0.0.1"
    assert event.tenant == tenant_a


def test_bad_password_is_401_and_audited(users, api_client, tenant_a):
    response = api_client.post(
        "/api/v1/auth/token/",
        {"username": "member", "password": "wrong"},
        format="json",
        REMOTE_ADDR="10.9.8.7",
    )
    assert response.status_code == 401
    event = AuditEvent.objects.get(action=AuditAction.LOGIN)
    assert (event.actor, event.method, event.result) == (
        "member",
        AuthMethod.JWT,
        AuthResult.FAILURE,
    )
    assert event.ip_address == "10.9.8.7"
    assert event.tenant == tenant_a


def test_missing_fields_is_400(api_client, db):
    response = api_client.post("/api/v1/auth/token/", {"username": "x"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()


def test_expired_access_token_is_401(users, api_client):
    token = AccessToken.for_user(users["member"])
    token.set_exp(lifetime=-timedelta(seconds=5))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = api_client.get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_garbage_refresh_is_401(api_client, db):
    response = api_client.post(
        "/api/v1/auth/token/refresh/", {"refresh": "not-a-token"}, format="json"
    )
    assert response.status_code == 401
