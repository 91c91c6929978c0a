"""Route patterns as endpoint labels; gunicorn's hook for dead workers."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from prometheus_client import REGISTRY

from metrics.middleware import endpoint_from_route
from tenants.models import ApiKey

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "traversion_site" / "gunicorn.conf.py"


@pytest.mark.parametrize(
    ("route", "endpoint"),
    [
        ("healthz", "/healthz"),
        ("api/v1/^api-keys/$", "/api/v1/api-keys/"),
        ("api/v1/^api-keys/(?P<pk>[^/.]+)/$", "/api/v1/api-keys/<pk>/"),
        ("api/v1/^tenants/(?P<slug>[^/.]+)/$", "/api/v1/tenants/<slug>/"),
        ("api/v1/rules/<int:pk>/toggle/", "/api/v1/rules/<int:pk>/toggle/"),
        ("admin/^(?P<app_label>auth|tenants)/$", "/admin/<app_label>/"),
        (r"^static/(?P<path>.*)\.css$", "/static/<path>.css"),
        ("", "/"),
    ],
)
def test_endpoint_is_the_route_pattern(route, endpoint):
    assert endpoint_from_route(route) == endpoint


def test_child_exit_drops_the_dead_workers_live_gauges(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    config = runpy.run_path(str(GUNICORN_CONF))
    for name in ("gauge_livesum_4242.db", "gauge_liveall_4242.db", "counter_4242.db"):
        (tmp_path / name).write_bytes(b"")
    config["child_exit"](None, SimpleNamespace(pid=4242))
    # Counters stay: what the worker counted still happened.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db"]


def _requests(endpoint: str, status: int, tenant: str = "") -> float:
    return (
        REGISTRY.get_sample_value(
            "traversion_http_requests_total",
            {
                "method": "GET",
                "endpoint": endpoint,
                "status_code": str(status),
                "tenant_id": tenant,
            },
        )
        or 0.0
    )


async def _awaited(response):
    return await response


@pytest.mark.django_db
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_wsgi_and_asgi_count_drf_views_and_failures_alike(client_class, settings, tenant_a):
    """Under ASGI the hooks run inline on the event loop; the counts must not change."""
    settings.ROOT_URLCONF = "metrics.tests.urls"
    _, raw_key = ApiKey.issue(tenant_a, f"mw-{client_class.__name__}", role="admin")
    client = client_class(raise_request_exception=False)
    tenant = str(tenant_a.pk)
    before_ok = _requests("/api/v1/api-keys/", 200, tenant)
    before_boom = _requests("/boom/<int:n>/", 500)

    def get(path: str, **headers: str):
        response = client.get(path, headers=headers)
        return async_to_sync(_awaited)(response) if client_class is AsyncClient else response

    for _ in range(2):
        assert get("/api/v1/api-keys/", Authorization=f"Api-Key {raw_key}").status_code == 200
    assert get("/boom/12345/").status_code == 500
    assert _requests("/api/v1/api-keys/", 200, tenant) - before_ok == 2
    assert _requests("/boom/<int:n>/", 500) - before_boom == 1
