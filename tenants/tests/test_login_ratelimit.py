"""Failed logins are rate-limited per IP and per account (429 with Retry-After)."""

from __future__ import annotations

import pytest

from tenants import ratelimit
from tenants.choices import AuditAction, AuthResult
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 3
    settings.LOGIN_RATE_LIMIT_PER_IP = 5
    settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS = 120
    return settings


def jwt_login(client, username, password, ip="198.51.100.7"):
    return client.post(
        "/api/v1/auth/token/",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=ip,
    )


def test_account_is_locked_after_its_limit_even_with_the_right_password(api_client, users, limits):
    for _ in range(3):
        assert jwt_login(api_client, "member", "wrong").status_code == 401
    blocked = jwt_login(api_client, "member", "pw-member")
    assert blocked.status_code == 429
    assert 1 <= int(blocked["Retry-After"]) <= 120
    assert "try again in" in blocked.json()["detail"]
    # Another account from another address is not affected.
    assert jwt_login(api_client, "viewer", "pw-viewer", ip="198.51.100.8").status_code == 200
    # The blocked attempt is a failed login in the audit log, so the brute-force and
    # suspicious-IP rules keep seeing it.
    blocked_rows = AuditEvent.objects.filter(
        action=AuditAction.LOGIN, actor="member", details__reason=ratelimit.RATE_LIMITED_REASON
    )
    assert blocked_rows.count() == 1
    row = blocked_rows.get()
    assert (row.result, row.method, row.ip_address) == (AuthResult.FAILURE, "jwt", "198.51.100.7")
    assert row.tenant is not None and row.tenant.slug == "alpha"


def test_an_ip_spraying_many_accounts_is_blocked(api_client, users, limits):
    for index in range(5):
        assert jwt_login(api_client, f"user{index}", "guess", ip="203.0.113.9").status_code == 401
    response = jwt_login(api_client, "owner", "pw-owner", ip="203.0.113.9")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert AuditEvent.objects.get(details__reason="rate_limited").details["blocked_by"] == "ip"
    # The owner can still log in from their own address.
    assert jwt_login(api_client, "owner", "pw-owner", ip="192.0.2.44").status_code == 200


def test_admin_login_is_limited_too(client, users, limits):
    for _ in range(3):
        response = client.post(
            "/admin/login/", {"username": "operator", "password": "nope"}, REMOTE_ADDR="192.0.2.5"
        )
        assert response.status_code == 200  # the form again
    response = client.post(
        "/admin/login/",
        {"username": "Operator", "password": "pw-operator"},
        REMOTE_ADDR="192.0.2.6",
    )
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    # Showing the login page is not a login attempt.
    assert client.get("/admin/login/", REMOTE_ADDR="192.0.2.6").status_code == 200


def test_successes_do_not_count_and_the_window_ends(api_client, users, limits):
    for _ in range(10):
        assert jwt_login(api_client, "member", "pw-member").status_code == 200
    for _ in range(3):
        jwt_login(api_client, "member", "wrong")
    assert jwt_login(api_client, "member", "pw-member").status_code == 429
    ratelimit.reset_all()  # as the window running out does
    assert jwt_login(api_client, "member", "pw-member").status_code == 200


def test_retry_after_is_what_is_left_of_the_window(users, limits):
    limits.LOGIN_RATE_LIMIT_WINDOW_SECONDS = 1
    for _ in range(3):
        ratelimit.record_failure("192.0.2.77", "someone")
    block = ratelimit.blocked("192.0.2.77", "someone")
    assert block is not None and block.retry_after == 1
    assert ratelimit.blocked("192.0.2.78", "someone-else") is None
