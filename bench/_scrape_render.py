"""One measurement of bench/metrics_scrape.py, in a fresh process (prints one JSON line).

A separate process because prometheus_client chooses single or multiprocess storage
when it is first imported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ENDPOINTS = ("/api/v1/events", "/api/v1/rules/", "/api/v1/instances/", "/api/v1/history/")


def populate(tenant_ids: list[str]) -> None:
    """The series a busy deployment has for each tenant (~70 lines each)."""
    from metrics import catalogue as c

    for t in tenant_ids:
        for endpoint in ENDPOINTS:
            for status in ("200", "404"):
                c.HTTP_REQUESTS.labels("GET", endpoint, status, t).inc()
        for action in ("auth.login", "api_key.created", "security.permission_denied"):
            c.AUDIT_EVENTS.labels(t, action).inc()
        for method, result in (("session", "success"), ("session", "failure"), ("jwt", "success")):
            c.AUTH_ATTEMPTS.labels(t, method, result).inc()
        c.API_KEY_USAGE.labels(t).inc()
        c.PERMISSION_VIOLATIONS.labels(t).inc()
        c.CROSS_TENANT_ACCESS_ATTEMPTS.labels(t).inc()
        for event_type in ("deploy", "error", "metric"):
            for service in ("api", "db", "worker"):
                c.EVENTS.labels(t, event_type, service).inc()
        c.EVENT_ERRORS.labels(t, "validation").inc()
        for query_type in ("events", "causality"):
            c.QUERIES.labels(t, query_type).inc()
            c.QUERY_DURATION.labels(t, query_type).observe(0.02)
        for causality_type in ("temporal", "service"):
            c.CAUSALITY_DETECTIONS.labels(t, causality_type, "api").inc()
        c.PATTERNS_DETECTED.labels(t, "recurring").inc()
        for result in ("ok", "firing"):
            c.ALERT_EVALUATIONS.labels(t, result).inc()
        c.WEBSOCKET_MESSAGES.labels(t, "state").inc()
        c.WEBSOCKET_CONNECTIONS.labels(t).set(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("single", "multiprocess"), required=True)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--directory", required=True)
    args = parser.parse_args()
    if args.mode == "multiprocess":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = args.directory  # before prometheus_client
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from django.db import connections
    from django.test import RequestFactory

    from metrics.views import metrics
    from tenants.models import Tenant

    tenant_ids = [str(pk) for pk in Tenant.objects.values_list("pk", flat=True)]
    connections.close_all()  # never share a connection with forked writers
    if args.mode == "multiprocess":
        context = multiprocessing.get_context("fork")
        writers = [
            context.Process(target=populate, args=(tenant_ids,)) for _ in range(args.writers)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
            if writer.exitcode != 0:
                raise SystemExit(f"a writer failed with {writer.exitcode}")
    else:
        populate(tenant_ids)

    factory = RequestFactory()
    timings = []
    for _ in range(1 + args.repeat):
        started = time.perf_counter()
        response = metrics(factory.get("/metrics"))
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    body = response.content
    print(
        json.dumps(
            {
                "lines": body.count(b"\n"),
                "bytes": len(body),
                "first_ms": timings[0],
                "median_ms": statistics.median(timings[1:]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
