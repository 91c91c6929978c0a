"""PromQL rules against a local HTTP server playing Prometheus's /api/v1/query."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from alerts.choices import RuleHealth
from alerts.evaluation import QueryError, get_datasource
from alerts.evaluation.runner import evaluate_rules
from alerts.models import AlertEvent, AlertInstance
from metrics.catalogue import ALERT_EVALUATIONS

from .engine_helpers import history, make_channel, make_rule, refresh

PROMETHEUS = get_datasource("prometheus")


class FakePrometheus:
    """Answers /api/v1/query with a canned body and records each request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.body: dict = {"status": "success", "data": {"resultType": "vector", "result": []}}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                server.requests.append(
                    {
                        "method": "GET",
                        "path": parts.path,
                        "query": parse_qs(parts.query),
                        "accept": self.headers.get("Accept"),
                    }
                )
                raw = server.body
                payload = (raw if isinstance(raw, str) else json.dumps(raw)).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def prometheus(settings):
    fake = FakePrometheus()
    settings.PROMETHEUS_URL = fake.url
    settings.ALERT_PROMETHEUS_TIMEOUT_MS = 2_000
    yield fake
    fake.close()


def vector(*series):
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": labels, "value": [1_700_000_000.123, value]} for labels, value in series
            ],
        },
    }


EXPRESSION = 'sum by (tenant_id) (rate(traversion_http_requests_total{status_code=~"5.."}[5m]))'


@pytest.mark.django_db
def test_each_series_is_a_sample_and_the_request_is_exact(prometheus, tenant_a):
    prometheus.body = vector(
        ({"__name__": "x", "tenant_id": str(tenant_a.pk), "job": "web"}, "0.25"),
        ({"tenant_id": "", "job": "web"}, "NaN"),
        ({"tenant_id": tenant_a.slug, "job": "worker"}, "+Inf"),
    )
    rule = make_rule(None, datasource="prometheus", query=EXPRESSION)
    samples = PROMETHEUS.evaluate(rule)

    assert prometheus.requests == [
        {
            "method": "GET",
            "path": "/api/v1/query",
            "query": {"query": [EXPRESSION], "timeout": ["2s"]},
            "accept": "application/json",
        }
    ]
    assert [(s.labels, s.value, s.tenant_id) for s in samples] == [
        ({"tenant_id": str(tenant_a.pk), "job": "web"}, 0.25, tenant_a.pk),
        ({"job": "web"}, None, None),
        ({"tenant_id": "alpha", "job": "worker"}, float("inf"), tenant_a.pk),
    ]


@pytest.mark.django_db
def test_a_scalar_result_is_one_sample(prometheus):
    prometheus.body = {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    rule = make_rule(None, datasource="prometheus", query="scalar(vector(3))")
    assert [(s.labels, s.value) for s in PROMETHEUS.evaluate(rule)] == [({}, 3.0)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"},
            "Prometheus refused the query (HTTP 400, bad_data): parse error at char 4",
        ),
        (
            200,
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "returns a matrix",
        ),
        (502, "<html>bad gateway</html>", "Prometheus answered HTTP 502 without JSON"),
    ],
)
def test_refusals_and_bad_answers_are_errors(prometheus, status, body, message):
    prometheus.status, prometheus.body = status, body
    rule = make_rule(None, datasource="prometheus", query="up")
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PROMETHEUS.evaluate(rule)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_unreachable_prometheus_puts_the_rule_in_error_never_ok(settings, tenant_a):
    settings.PROMETHEUS_URL = f"http://127.0.0.1:{closed_port()}"
    hook = make_channel(None, name="ops")
    rule = make_rule(None, [hook], datasource="prometheus", query="up == 0", name="api_down")
    before = ALERT_EVALUATIONS.labels(tenant_id="", result="error")._value.get()

    (outcome,) = evaluate_rules([rule.pk])

    assert outcome.result == "error"
    rule = refresh(rule)
    assert rule.health == RuleHealth.ERROR
    assert rule.last_error.startswith(
        f"Prometheus at {settings.PROMETHEUS_URL}/api/v1/query is unreachable"
    )
    assert ALERT_EVALUATIONS.labels(tenant_id="", result="error")._value.get() - before == 1
    (event,) = AlertEvent.objects.filter(rule=rule)
    assert (event.kind, event.to_state, event.instance) == ("state", "error", None)
    assert event.message.startswith("evaluation failed: Prometheus at")


@pytest.mark.django_db
def test_a_prometheus_rule_fires_per_series_through_the_runner(prometheus, tenant_a):
    prometheus.body = vector(
        ({"tenant_id": str(tenant_a.pk)}, "0.2"), ({"tenant_id": "999999"}, "0.01")
    )
    rule = make_rule(
        None, [make_channel(None, name="ops")], datasource="prometheus", query=EXPRESSION,
        condition_operator=">", threshold=0.05, name="traversion_high_error_rate",
    )  # fmt: skip
    (outcome,) = evaluate_rules([rule.pk])
    assert outcome.result == "firing"
    (instance,) = AlertInstance.objects.filter(rule=rule)
    assert (instance.tenant, instance.labels, instance.value) == (
        tenant_a,
        {"tenant_id": str(tenant_a.pk)},
        0.2,
    )
    assert history(rule) == [("firing", "inactive", "firing")]


def test_tenant_rules_cannot_use_promql():
    with pytest.raises(QueryError, match="only global rules"):
        PROMETHEUS.validate("up", global_rule=False)
    PROMETHEUS.validate("up", global_rule=True)
    PROMETHEUS.validate("up")  # scope unknown: the other checks only
    with pytest.raises(QueryError, match="missing"):
        PROMETHEUS.validate("sum(rate(x[5m])", global_rule=True)
    with pytest.raises(QueryError, match="empty"):
        PROMETHEUS.validate("  ", global_rule=True)
