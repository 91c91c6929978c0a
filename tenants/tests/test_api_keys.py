from __future__ import annotations

import json

import pytest
from django.core import serializers as django_serializers

from tenants.choices import AuditAction, AuthMethod, AuthResult
from tenants.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


def test_raw_key_is_stored_nowhere(tenant_a, users, client_for):
    response = client_for("owner").post(
        "/api/v1/api-keys/", {"name": "ci", "role": "member"}, format="json"
    )
    assert response.status_code == 201, response.content
    raw_key = response.json()["key"]
    assert raw_key.startswith(f"trv_{response.json()['prefix']}_")
    # Dump every row of every model and look for the key or its secret part.
    from django.apps import apps

    dump = django_serializers.serialize(
        "json", [obj for model in apps.get_models() for obj in model.objects.all()]
    )
    secret = raw_key.split("_", 2)[2]
    assert raw_key not in dump
    assert secret not in dump
    key = ApiKey.objects.get(prefix=response.json()["prefix"])
    assert len(key.key_hash) == 64 and key.key_hash not in raw_key


def test_key_is_shown_once(tenant_a, users, client_for):
    client = client_for("owner")
    created = client.post("/api/v1/api-keys/", {"name": "once"}, format="json").json()
    shown = client.get(f"/api/v1/api-keys/{created['id']}/").json()
    assert "key" not in shown
    assert shown["prefix"] == created["prefix"]
    assert all("key" not in row for row in client.get("/api/v1/api-keys/").json()["results"])


def test_api_key_authenticates_and_records_last_use(tenant_a, api_key_for):
    client = api_key_for(tenant_a, role="admin")
    key = ApiKey.objects.get(tenant=tenant_a)
    assert key.last_used_at is None
    response = client.get("/api/v1/tenants/")
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()["results"]] == ["alpha"]
    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key ",
        "Api-Key garbage",
        "Api-Key trv_",
        "Api-Key trv__x",
        "Api-Key trv_deadbeef_wrongsecret",
        "Api-Key \u00e9\u00e9\u00e9",
        "api-key trv_a_b_c_d",
    ],
)
def test_malformed_or_unknown_key_is_401_json(tenant_a, api_client, header):
    api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()
    assert response["WWW-Authenticate"] == "Api-Key"
    failure = AuditEvent.objects.get(action=AuditAction.LOGIN)
    assert (failure.method, failure.result) == (AuthMethod.API_KEY, AuthResult.FAILURE)


def test_revoked_key_is_401(tenant_a, users, client_for, api_key_for):
    client = api_key_for(tenant_a)
    key = ApiKey.objects.get(tenant=tenant_a)
    assert client.get("/api/v1/tenants/").status_code == 200
    assert client_for("owner").delete(f"/api/v1/api-keys/{key.pk}/").status_code == 204
    response = client.get("/api/v1/tenants/")
    assert response.status_code == 401
    assert json.loads(response.content) == {"detail": "revoked API key"}
    assert (
        AuditEvent.objects.filter(action=AuditAction.API_KEY_REVOKED, tenant=tenant_a).count() == 1
    )


def test_role_limits_issued_key(tenant_a, users, client_for):
    response = client_for("admin").post(
        "/api/v1/api-keys/", {"name": "x", "role": "owner"}, format="json"
    )
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_duplicate_active_name_is_400(tenant_a, users, client_for):
    client = client_for("owner")
    assert client.post("/api/v1/api-keys/", {"name": "dup"}, format="json").status_code == 201
    response = client.post("/api/v1/api-keys/", {"name": "dup"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()
    assert ApiKey.objects.count() == 1


def test_bad_role_is_400(tenant_a, users, client_for):
    response = client_for("owner").post(
        "/api/v1/api-keys/", {"name": "r", "role": "god"}, format="json"
    )
    assert response.status_code == 400
    assert "role" in response.json()
