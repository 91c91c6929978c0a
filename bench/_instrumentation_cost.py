"""The metrics code alone, timed in a process of its own (prints one JSON line).

The middleware pair around a resolved request, and the execute wrapper (the
traversion_storage_* and django_db_* families) around a statement that costs nothing,
in multiprocess mode as under gunicorn (with the batched writes of metrics/buffered.py),
free of the noise of serving and loading over the network. Inside a real request the
same code costs several times more (docs/BENCHMARKS.md, "Request overhead"): this is
the floor, not the cost.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-cost-")
    os.environ["ENABLE_METRICS"] = "true"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from django.db import connections
    from django.http import JsonResponse
    from django.test import RequestFactory
    from django.urls import resolve

    from metrics.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware
    from metrics.storage import observe_statement

    response = JsonResponse({"status": "ok"})
    before = PrometheusBeforeMiddleware(lambda request: response)
    after = PrometheusAfterMiddleware(lambda request: response)
    request = RequestFactory().get("/api/v1/api-keys/")
    request.resolver_match = resolve("/api/v1/api-keys/")
    n = 20_000

    def middleware_pair() -> float:
        started = time.process_time()
        for _ in range(n):
            before.process_request(request)
            after.process_request(request)
            after.process_response(request, response)
            before.process_response(request, response)
        return (time.process_time() - started) / n * 1e6

    def noop(sql, params, many, context):
        return None

    context = {"connection": connections["default"], "cursor": None}

    def execute_wrapper() -> float:
        started = time.process_time()
        for _ in range(n):
            observe_statement(noop, "SELECT 1", None, False, context)
        return (time.process_time() - started) / n * 1e6

    pair = statistics.median(middleware_pair() for _ in range(5))
    statement = statistics.median(execute_wrapper() for _ in range(5))
    print(json.dumps({"request_us": pair, "statement_us": statement}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
