"""Scrape-time gauges: right values, cached for METRICS_COLLECTION_INTERVAL, bounded."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

from bench._support import free_port
from conftest import require_postgresql
from metrics import security, storage, system
from metrics.collectors import REGISTRY as SCRAPE_GAUGES
from tenants.models import Tenant

from .helpers import parse

pytestmark = pytest.mark.django_db


def scrape(client=None) -> dict:
    response = (client or APIClient()).get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


def values(families, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for s in families[name].samples}


@pytest.fixture
def fresh(settings):
    settings.METRICS_COLLECTION_INTERVAL = 0
    for gauge in SCRAPE_GAUGES.values():
        gauge._computed_at = float("-inf")
    storage.connection_counts.cache_clear()
    security.session_tallies.cache_clear()
    return settings


def test_tenant_quota(fresh, tenant_a, tenant_b):
    Tenant.objects.filter(pk=tenant_b.pk).update(storage_quota_bytes=123_456)
    Tenant.objects.create(slug="gone", name="Gone", is_active=False)
    quota = values(scrape(), "traversion_tenant_storage_quota_bytes")
    assert quota == {
        (str(tenant_a.pk),): float(tenant_a.storage_quota_bytes),
        (str(tenant_b.pk),): 123_456.0,
    }


def test_database_gauges_are_cached_for_the_interval(fresh, tenant_a, django_assert_num_queries):
    fresh.METRICS_COLLECTION_INTERVAL = 3_600_000
    first = scrape()
    Tenant.objects.create(slug="late", name="Late")
    # Within the interval: the cached values, and not one query from any scrape gauge.
    with django_assert_num_queries(0):
        body = APIClient().get("/metrics").content.decode()
    assert values(parse(body), "traversion_tenant_storage_quota_bytes") == values(
        first, "traversion_tenant_storage_quota_bytes"
    )


def test_postgres_connection_counts(fresh, settings):
    require_postgresql("pg_stat_activity needs PostgreSQL")
    db = settings.DATABASES["default"]
    params = {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"], "port": db["PORT"]}
    before = scrape()
    extra = [psycopg.connect(**{k: v for k, v in params.items() if v}) for _ in range(2)]
    try:
        after = scrape()
    finally:
        for conn in extra:
            conn.close()
    idle = "traversion_storage_connections_idle"
    assert values(after, idle)[()] - values(before, idle)[()] == 2
    assert values(after, "traversion_storage_connections_active")[()] >= 0


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/-/ready" else 404)
        self.end_headers()
        self.wfile.write(b"Prometheus Server is Ready.\n")

    def log_message(self, *args):
        pass


def test_dependency_up(fresh, redis_url):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fresh.REDIS_URL = redis_url
    try:
        fresh.PROMETHEUS_URL = f"http://127.0.0.1:{server.server_address[1]}"
        up = values(scrape(), "traversion_dependency_up")
        expected_db = 1.0 if connection.vendor == "postgresql" else None
        assert up[("prometheus",)] == 1.0
        assert up[("redis",)] == 1.0
        assert up.get(("postgres",)) == expected_db
        # Nothing listens there any more: down, and the scrape still answers.
        fresh.PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"
        fresh.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
        fresh.CELERY_BROKER_URL = "filesystem://"
        down = values(scrape(), "traversion_dependency_up")
        assert down[("prometheus",)] == 0.0
        assert down[("redis",)] == 0.0
    finally:
        server.shutdown()


def test_system_gauges_describe_this_process(fresh):
    families = scrape()
    memory = values(families, "traversion_memory_usage_bytes")
    assert set(memory) == {("rss",), ("vms",), ("shared",), ("heap",)}
    rss = psutil.Process().memory_info().rss
    assert 0.5 * rss < memory[("rss",)] < 2 * rss
    assert 0 < memory[("heap",)] <= memory[("rss",)]
    assert 0 <= values(families, "traversion_cpu_usage_percent")[()] <= 100
    uptime = values(families, "traversion_uptime_seconds")[()]
    assert 0 < uptime < 86_400 * 30


def test_system_gauges_cover_the_server_tree(monkeypatch):
    """Under gunicorn the gauges sum the master and its workers (TRAVERSION_SERVER_PID)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        monkeypatch.setenv(system.SERVER_PID_ENV, str(psutil.Process().pid))
        pids = {p.pid for p in system.server_processes()}
        assert {psutil.Process().pid, child.pid} <= pids
        both = system.memory_by_type(system.server_processes())["rss"]
        assert both > psutil.Process().memory_info().rss
    finally:
        child.kill()
        child.wait()
