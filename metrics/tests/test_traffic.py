"""Real requests move every family they concern by exactly the expected amount.

Each step snapshots every traversion_* counter and histogram count of the registry,
makes one request, and compares the *whole* difference with what that request must
produce: a missing increment, a double count, or a stray label set all fail.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from metrics.security import ranking
from tenants.models import ApiKey

from .helpers import changes, key, snapshot

pytestmark = pytest.mark.django_db

STORAGE = "traversion_storage_operation_duration_seconds"
LOGIN = "auth.login"


@pytest.fixture(autouse=True)
def fresh_ranking(settings):
    settings.METRICS_COLLECTION_INTERVAL = 0  # re-read the top offenders at each failure
    ranking.forget()
    yield
    ranking.forget()


def http(method: str, endpoint: str, status: int, tenant: str = "") -> dict:
    return {
        key(
            "traversion_http_requests_total",
            method=method,
            endpoint=endpoint,
            status_code=status,
            tenant_id=tenant,
        ): 1,
        key("traversion_http_request_duration_seconds_count", method=method, endpoint=endpoint): 1,
    }


def login(tenant: str, method: str, result: str, ip: str | None = None) -> dict:
    expected = {
        key("traversion_auth_attempts_total", tenant_id=tenant, method=method, result=result): 1,
        key("traversion_audit_events_total", tenant_id=tenant, action=LOGIN): 1,
    }
    if ip is not None:
        expected[key("traversion_auth_failures_by_ip_total", ip_address=ip)] = 1
    return expected


def one(name: str, **labels) -> dict:
    return {key(name, **labels): 1}


def step(expected: dict, request):
    before = snapshot()
    response = request()
    moved = {k: v for k, v in changes(before, snapshot()).items() if not k[0].startswith(STORAGE)}
    assert moved == expected
    return response


def test_every_family_moves_by_the_exact_delta(client, users, tenant_a, tenant_b, api_key_for):
    a = str(tenant_a.pk)
    # Session login through the admin form: a failure, then a success (operator: no tenant).
    response = step(
        {**http("POST", "/admin/login/", 200), **login("", "session", "failure", "192.0.2.7")},
        lambda: client.post(
            "/admin/login/",
            {"username": "operator", "password": "wrong"},
            REMOTE_ADDR="192.0.2.7",
        ),
    )
    assert response.status_code == 200
    response = step(
        {**http("POST", "/admin/login/", 302), **login("", "session", "success")},
        lambda: client.post(
            "/admin/login/",
            {"username": "operator", "password": "pw-operator"},
            REMOTE_ADDR="192.0.2.8",
        ),
    )
    assert response.status_code == 302

    # JWT obtain: a failure, a success (issued), a refresh (issued again).
    api = APIClient()
    token_url = "/api/v1/auth/token/"
    response = step(
        {**http("POST", token_url, 401), **login(a, "jwt", "failure", "127.0.0.1")},
        lambda: api.post(token_url, {"username": "member", "password": "x"}, format="json"),
    )
    assert response.status_code == 401
    response = step(
        {
            **http("POST", token_url, 200),
            **login(a, "jwt", "success"),
            **one("traversion_jwt_issued_total"),
        },
        lambda: api.post(token_url, {"username": "member", "password": "pw-member"}, format="json"),
    )
    assert response.status_code == 200
    tokens = response.json()
    refresh_url = "/api/v1/auth/token/refresh/"
    response = step(
        {**http("POST", refresh_url, 200), **one("traversion_jwt_issued_total")},
        lambda: api.post(refresh_url, {"refresh": tokens["refresh"]}, format="json"),
    )
    assert response.status_code == 200

    # A member may not list API keys: a permission denial, with a validated token.
    keys_url = "/api/v1/api-keys/"
    member = APIClient()
    member.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    response = step(
        {
            **http("GET", keys_url, 403, a),
            **one("traversion_jwt_validated_total"),
            **one("traversion_permission_violations_total", tenant_id=a),
            **one(
                "traversion_audit_events_total", tenant_id=a, action="security.permission_denied"
            ),
        },
        lambda: member.get(keys_url),
    )
    assert response.status_code == 403

    # An expired token: counted as expired, not validated.
    expired = AccessToken.for_user(users["admin"])
    expired.set_exp(from_time=timezone.now() - timedelta(hours=2), lifetime=timedelta(minutes=1))
    stale = APIClient()
    stale.credentials(HTTP_AUTHORIZATION=f"Bearer {expired}")
    response = step(
        {**http("GET", keys_url, 401), **one("traversion_jwt_expired_total")},
        lambda: stale.get(keys_url),
    )
    assert response.status_code == 401

    # API keys: a good one (usage, tenant label on the request), a malformed one.
    machine = api_key_for(tenant_a, "admin")
    response = step(
        {**http("GET", keys_url, 200, a), **one("traversion_api_key_usage_total", tenant_id=a)},
        lambda: machine.get(keys_url),
    )
    assert response.status_code == 200
    bad_key = APIClient()
    bad_key.credentials(HTTP_AUTHORIZATION="Api-Key trv_deadbeef_nope")
    response = step(
        {**http("GET", keys_url, 401), **login("", "api_key", "failure", "127.0.0.1")},
        lambda: bad_key.get(keys_url),
    )
    assert response.status_code == 401

    # Cross-tenant: another tenant's object by id, then another tenant by name.
    foreign_key, _ = ApiKey.issue(tenant_b, "beta-key")
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(users['admin'])}")
    response = step(
        {
            **http("GET", "/api/v1/api-keys/<pk>/", 404, a),
            **one("traversion_jwt_validated_total"),
            **one("traversion_cross_tenant_access_attempts_total", tenant_id=a),
            **one(
                "traversion_audit_events_total", tenant_id=a, action="security.cross_tenant_access"
            ),
        },
        lambda: admin.get(f"/api/v1/api-keys/{foreign_key.pk}/"),
    )
    assert response.status_code == 404
    response = step(
        {
            **http("GET", keys_url, 404),
            **one("traversion_jwt_validated_total"),
            **one("traversion_cross_tenant_access_attempts_total", tenant_id=""),
            **one(
                "traversion_audit_events_total", tenant_id="", action="security.cross_tenant_access"
            ),
        },
        lambda: admin.get(keys_url, HTTP_X_TENANT="beta"),
    )
    assert response.status_code == 404

    # A path that matches no route is counted under a fixed endpoint, not its path.
    response = step(http("GET", "unmatched", 404), lambda: client.get("/no/such/page/8271/"))
    assert response.status_code == 404


def test_storage_operations_count_every_statement(tenant_a, api_key_for):
    machine = api_key_for(tenant_a, "admin")
    before = snapshot()
    with CaptureQueriesContext(connection) as queries:
        assert machine.get("/api/v1/api-keys/").status_code == 200
    moved = changes(before, snapshot())
    by_operation = {
        dict(labels)["operation"]: value
        for (name, labels), value in moved.items()
        if name == f"{STORAGE}_count"
    }
    statements = [q["sql"].lstrip().split(None, 1)[0].lower() for q in queries.captured_queries]
    expected = {}
    for word in statements:
        op = word if word in ("select", "insert", "update", "delete") else "other"
        expected[op] = expected.get(op, 0) + 1
    assert expected.get("select", 0) >= 2  # key lookup and the list, at least
    assert by_operation == expected
