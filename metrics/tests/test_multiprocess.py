"""Under gunicorn with several workers, what Prometheus scrapes adds up to what happened."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector

from bench._support import Server, app_env, get
from conftest import require_postgresql
from tenants.models import ApiKey

from .helpers import parse, sample_sums

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ENDPOINT = "/api/v1/api-keys/"


def live_database_url() -> str:
    """The pytest-django test database, which the gunicorn workers share with the test."""
    db = settings.DATABASES["default"]
    require_postgresql(
        "the multiprocess test runs against PostgreSQL (DATABASE_URL=postgres://...)"
    )
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


def server_env(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return app_env(
        DATABASE_URL=live_database_url(),
        REDIS_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        METRICS_COLLECTION_INTERVAL="0",
        **extra,
    )


def per_process_counts(directory: Path) -> dict[str, float]:
    """What each worker counted, read from its own file."""
    counts = {}
    for path in sorted(directory.glob("counter_*.db")):
        for family in MultiProcessCollector.merge([str(path)]):
            if family.name == "traversion_http_requests":
                counts[path.stem.split("_")[1]] = sum(
                    s.value
                    for s in family.samples
                    if s.name == "traversion_http_requests_total"
                    and s.labels.get("endpoint") == ENDPOINT
                )
    return counts


def scrape_until(port: int, count: int, deadline: float) -> tuple[dict, list[float]]:
    """Scrape until the requests counter reaches `count` (the other workers write their
    increments every METRICS_FLUSH_INTERVAL); returns the last families and every count
    seen."""
    seen = []
    stop = time.monotonic() + deadline
    while True:
        status, body = get(port, "/metrics")
        assert status == 200
        families = parse(body.decode())
        requests = families["traversion_http_requests_total"]
        seen.append(sample_sums(requests, "traversion_http_requests_total", endpoint=ENDPOINT))
        if seen[-1] >= count or time.monotonic() > stop:
            return families, seen
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("worker_class", "flush_interval"),
    [("uvicorn_worker.UvicornWorker", "1000"), ("sync", "1000"), ("sync", "0")],
)
def test_three_workers_count_every_request_once(
    tmp_path, redis_url, tenant_a, worker_class, flush_interval
):
    _, raw_key = ApiKey.issue(tenant_a, "scraper", role="admin")
    headers = {"Authorization": f"Api-Key {raw_key}"}
    env = server_env(tmp_path, redis_url, METRICS_FLUSH_INTERVAL=flush_interval)
    with Server(env, workers=3, worker_class=worker_class) as server:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda _: get(server.port, ENDPOINT, headers)[0], range(300)))
        assert statuses == [200] * 300
        families, seen = scrape_until(server.port, 300, deadline=5.0)
    assert seen[-1] == 300 and max(seen) == 300, seen  # every request, counted once
    if flush_interval == "0":
        assert seen == [300]  # written at once: the first scrape has them all

    requests = families["traversion_http_requests_total"]
    assert (
        sample_sums(
            requests,
            "traversion_http_requests_total",
            endpoint=ENDPOINT,
            method="GET",
            status_code="200",
            tenant_id=str(tenant_a.pk),
        )
        == 300
    )
    durations = families["traversion_http_request_duration_seconds"]
    assert (
        sample_sums(durations, "traversion_http_request_duration_seconds_count", endpoint=ENDPOINT)
        == 300
    )
    usage = families["traversion_api_key_usage_total"]
    assert sample_sums(usage, "traversion_api_key_usage_total", tenant_id=str(tenant_a.pk)) == 300

    # The total really is a sum over several workers, not one worker's view.
    served = {pid: n for pid, n in per_process_counts(tmp_path).items() if n}
    assert len(served) >= 2, served
    assert sum(served.values()) == 300


def test_disabled_metrics_record_nothing(tmp_path, redis_url, tenant_a):
    """ENABLE_METRICS=false: /metrics is 404 and no process writes a single sample."""
    _, raw_key = ApiKey.issue(tenant_a, "disabled", role="admin")
    env = server_env(tmp_path, redis_url, ENABLE_METRICS="false")
    with Server(env, workers=2, worker_class="uvicorn_worker.UvicornWorker") as server:
        assert get(server.port, "/metrics")[0] == 404
        assert get(server.port, ENDPOINT, {"Authorization": f"Api-Key {raw_key}"})[0] == 200
        assert get(server.port, ENDPOINT, {"Authorization": "Api-Key trv_x_y"})[0] == 401
        assert get(server.port, "/no/such/page/")[0] == 404
    assert sorted(p.name for p in tmp_path.iterdir()) == []
