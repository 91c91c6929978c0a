"""Fixtures shared by every app's tests.

Every test gets two tenants with an owner, an admin, a member and a viewer each, plus an
outsider who belongs to neither, so that every endpoint is checked across the boundary.
"""

from __future__ import annotations

import os
import socket

import pytest


def require_service(name: str, host: str, port: int) -> None:
    """Skip locally when a real component is missing; in CI (CI=true) fail instead."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must provide it")
        pytest.skip(message)


def require_postgresql(reason: str) -> None:
    """Skip on another database locally; in CI the suite must run on PostgreSQL, so fail."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    message = f"{reason} (the test database is {connection.vendor})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must run on PostgreSQL")
    pytest.skip(message)


def require_binary(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must provide it")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    from urllib.parse import urlparse

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    parsed = urlparse(url)
    require_service("Redis", parsed.hostname or "127.0.0.1", parsed.port or 6379)
    return url


@pytest.fixture
def tenant_a(db):
    from tenants.models import Tenant

    return Tenant.objects.create(slug="alpha", name="Alpha")


@pytest.fixture
def tenant_b(db):
    from tenants.models import Tenant

    return Tenant.objects.create(slug="beta", name="Beta")


def _user(username: str, tenant=None, role: str | None = None, **extra):
    from django.contrib.auth import get_user_model

    from tenants.models import Membership

    user = get_user_model().objects.create_user(
        username=username, password="pw-" + username, **extra
    )
    if tenant is not None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def users(tenant_a, tenant_b):
    """owner/admin/member/viewer of tenant A, owner_b/member_b of B, and an outsider."""
    return {
        "owner": _user("owner", tenant_a, "owner"),
        "admin": _user("admin_a", tenant_a, "admin"),
        "member": _user("member", tenant_a, "member"),
        "viewer": _user("viewer", tenant_a, "viewer"),
        "owner_b": _user("owner_b", tenant_b, "owner"),
        "member_b": _user("member_b", tenant_b, "member"),
        "outsider": _user("outsider"),
        "operator": _user("operator", is_superuser=True, is_staff=True),
    }


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def client_for(users):
    """client_for("member") -> an APIClient logged in (JWT) as that user."""
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import AccessToken

    def make(name: str, tenant: str | None = None) -> APIClient:
        client = APIClient()
        token = AccessToken.for_user(users[name])
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        if tenant:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_X_TENANT=tenant)
        return client

    return make


@pytest.fixture
def api_key_for(tenant_a, tenant_b):
    """api_key_for(tenant, role="member") -> an APIClient authenticated by a fresh API key."""
    from rest_framework.test import APIClient

    from tenants.models import ApiKey

    def make(tenant, role: str = "member") -> APIClient:
        _, raw_key = ApiKey.issue(tenant, f"key-{role}-{ApiKey.objects.count()}", role=role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
        client.raw_key = raw_key
        return client

    return make


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2 costs ~0.4 s per user; tests create many users and prove nothing about it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def reset_login_rate_limits():
    # Failed-login counters live in the shared cache and would carry over from one test
    # (or one run) to the next; every test starts with none.
    from tenants.ratelimit import reset_all

    reset_all()
