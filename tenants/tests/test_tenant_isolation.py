"""Every tenant endpoint across the boundary: two tenants, every role, and an outsider."""

from __future__ import annotations

import pytest

from tenants.choices import AuditAction
from tenants.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


def cross_tenant_events():
    return AuditEvent.objects.filter(action=AuditAction.CROSS_TENANT)


@pytest.mark.parametrize(
    ("user", "visible"),
    [
        ("owner", ["alpha"]),
        ("viewer", ["alpha"]),
        ("owner_b", ["beta"]),
        ("outsider", []),
        ("operator", ["alpha", "beta"]),
    ],
)
def test_tenant_list_shows_only_own_tenants(client_for, user, visible):
    response = client_for(user).get("/api/v1/tenants/")
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()["results"]] == visible


def test_foreign_tenant_is_404_and_recorded(client_for, tenant_a, tenant_b):
    response = client_for("member").get("/api/v1/tenants/beta/")
    assert response.status_code == 404
    event = cross_tenant_events().get()
    assert event.actor == "member"
    assert event.details["object_id"] == "beta"
    # A missing tenant is a plain 404, not an attack.
    assert client_for("member").get("/api/v1/tenants/nope/").status_code == 404
    assert cross_tenant_events().count() == 1


@pytest.mark.parametrize(
    ("user", "status"), [("owner", 200), ("admin", 200), ("member", 403), ("viewer", 403)]
)
def test_tenant_rename_needs_admin(client_for, tenant_a, user, status):
    response = client_for(user).patch("/api/v1/tenants/alpha/", {"name": "Renamed"}, format="json")
    assert response.status_code == status
    tenant_a.refresh_from_db()
    assert tenant_a.name == ("Renamed" if status == 200 else "Alpha")


def test_quota_is_operator_only(client_for, tenant_a):
    response = client_for("owner").patch(
        "/api/v1/tenants/alpha/", {"storage_quota_bytes": 1}, format="json"
    )
    assert response.status_code == 400
    assert "storage_quota_bytes" in response.json()
    assert (
        client_for("operator")
        .patch("/api/v1/tenants/alpha/", {"storage_quota_bytes": 1}, format="json")
        .status_code
        == 200
    )


def test_only_operators_create_tenants(client_for, users):
    assert (
        client_for("owner")
        .post("/api/v1/tenants/", {"slug": "x", "name": "X"}, format="json")
        .status_code
        == 403
    )
    response = client_for("operator").post(
        "/api/v1/tenants/", {"slug": "gamma", "name": "Gamma"}, format="json"
    )
    assert response.status_code == 201
    bad = client_for("operator").post(
        "/api/v1/tenants/", {"slug": "no spaces", "name": ""}, format="json"
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"slug", "name"}


@pytest.mark.parametrize(
    ("user", "list_status", "create_status"),
    [
        ("owner", 200, 201),
        ("admin", 200, 201),
        ("member", 403, 403),
        ("viewer", 403, 403),
        ("outsider", 403, 403),
    ],
)
def test_api_key_endpoint_roles(client_for, tenant_a, user, list_status, create_status):
    client = client_for(user)
    assert client.get("/api/v1/api-keys/").status_code == list_status
    assert (
        client.post("/api/v1/api-keys/", {"name": "k"}, format="json").status_code == create_status
    )


def test_permission_denial_is_audited(client_for, tenant_a):
    client_for("viewer").post("/api/v1/api-keys/", {"name": "k"}, format="json")
    event = AuditEvent.objects.get(action=AuditAction.PERMISSION_DENIED)
    assert event.actor == "viewer"
    assert event.tenant == tenant_a


def test_api_keys_never_cross_tenants(client_for, tenant_a, tenant_b, api_key_for):
    key_b, _ = ApiKey.issue(tenant_b, "b-key")
    key_a, _ = ApiKey.issue(tenant_a, "a-key")
    owner = client_for("owner")
    listed = owner.get("/api/v1/api-keys/").json()["results"]
    assert [k["prefix"] for k in listed] == [key_a.prefix]

    for method in ("get", "delete"):
        response = getattr(owner, method)(f"/api/v1/api-keys/{key_b.pk}/")
        assert response.status_code == 404
    assert cross_tenant_events().count() == 2
    key_b.refresh_from_db()
    assert key_b.is_active

    # An API key of tenant B cannot reach A's key either.
    b_admin = api_key_for(tenant_b, role="admin")
    assert b_admin.get(f"/api/v1/api-keys/{key_a.pk}/").status_code == 404
    assert cross_tenant_events().count() == 3


def test_tenant_header_selects_and_guards(client_for, users, tenant_a, tenant_b):
    from tenants.models import Membership

    Membership.objects.create(user=users["member"], tenant=tenant_b, role="admin")
    client = client_for("member")
    ambiguous = client.get("/api/v1/api-keys/")
    assert ambiguous.status_code == 400
    assert "tenant" in ambiguous.json()
    assert client_for("member", tenant="beta").get("/api/v1/api-keys/").status_code == 200
    assert client.get("/api/v1/api-keys/?tenant=beta").status_code == 200
    # Naming a tenant you are not in is a cross-tenant attempt.
    assert client_for("owner", tenant="beta").get("/api/v1/api-keys/").status_code == 404
    event = cross_tenant_events().get()
    assert event.details["requested_tenant"] == "beta"


def test_api_key_cannot_select_another_tenant(tenant_a, tenant_b, api_key_for):
    client = api_key_for(tenant_a, role="admin")
    response = client.get("/api/v1/api-keys/", HTTP_X_TENANT="beta")
    assert response.status_code == 404
    assert cross_tenant_events().count() == 1


def test_anonymous_is_401(api_client, tenant_a):
    for path in ("/api/v1/tenants/", "/api/v1/api-keys/"):
        assert api_client.get(path).status_code == 401
