"""Helpers of the API, admin and receiver tests: rows, a local HTTP receiver, counters."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY

from alerts.models import AlertRule, NotificationChannel
from tenants.choices import AuditAction
from tenants.models import AuditEvent

#: A query every SQL datasource check accepts (a tenant-scoped view, an aggregate).
GOOD_QUERY = "SELECT count(*) AS value FROM events WHERE severity = 'error'"


def make_channel(tenant, name: str = "slack", type: str = "slack", config: dict | None = None):
    if config is None:
        config = {"webhook_url": "http://127.0.0.1:9/hooks/T000/B000/secret"}
    return NotificationChannel.objects.create(tenant=tenant, name=name, type=type, config=config)


def make_rule(tenant, name: str = "rule", channels=(), **fields) -> AlertRule:
    fields.setdefault("query", GOOD_QUERY)
    rule = AlertRule.objects.create(tenant=tenant, name=name, **fields)
    rule.channels.set(channels)
    return rule


def cross_tenant_events():
    return AuditEvent.objects.filter(action=AuditAction.CROSS_TENANT)


def denied_events():
    return AuditEvent.objects.filter(action=AuditAction.PERMISSION_DENIED)


def counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def cross_tenant_counter(tenant) -> float:
    return counter("traversion_cross_tenant_access_attempts_total", tenant_id=str(tenant.pk))


def violations_counter(tenant) -> float:
    return counter("traversion_permission_violations_total", tenant_id=str(tenant.pk))


class HttpReceiver:
    """An HTTP server on 127.0.0.1 that records every POST (Slack, webhooks)."""

    def __init__(self, status: int = 200, body: bytes = b"ok") -> None:
        self.requests: list[dict] = []
        self.status, self.body = status, body
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": raw}
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)
                receiver.received.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def json(self, index: int = -1) -> dict:
        return json.loads(self.requests[index]["body"])

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def default_celery_app(app):
    """Make `app` the default Celery app, so threads other than the test's (the live
    server's) publish with it too; `celery_on_redis` only sets the test thread's."""
    from celery import _state

    previous = _state.default_app
    _state.set_default_app(app)
    try:
        yield app
    finally:
        _state.set_default_app(previous)
