"""Every `traversion_*` metric family, defined once.

Producers import the family they feed from here; nothing else creates a traversion_*
metric. Gauges that are computed at scrape time live in `metrics.collectors`, not here.
Buckets are chosen for what each histogram measures.

`ENABLE_METRICS=false` is read once, when this module is imported: every family is then
a `DisabledMetric` with the same interface that records nothing, so producers need no
`if` of their own and a disabled process writes no multiprocess files at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from .disabled import DisabledMetric


def collection_enabled() -> bool:
    """ENABLE_METRICS from Django settings (or the environment before settings exist)."""
    from django.conf import settings

    if settings.configured:
        return bool(getattr(settings, "ENABLE_METRICS", True))
    raw = os.environ.get("ENABLE_METRICS", "").strip().lower()
    return raw not in {"0", "false", "no", "off"}


ENABLED: bool = collection_enabled()

# `*_created` samples double the exposition of every counter and histogram, and are not
# exported in multiprocess mode anyway: one output in both modes, half the scrape.
disable_created_metrics()

#: Exposed family name (counters with their `_total`) -> metric object.
FAMILIES: dict[str, Counter | Gauge | Histogram | DisabledMetric] = {}


def _define(kind: type, name: str, documentation: str, labels: Sequence[str] = (), **kwargs):
    if ENABLED:
        metric = kind(name, documentation, list(labels), **kwargs)
    else:
        metric = DisabledMetric(kind._type, name, documentation, tuple(labels))
    FAMILIES[name] = metric
    return metric


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    return _define(Counter, name, documentation, labels)


def histogram(
    name: str, documentation: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
) -> Histogram:
    return _define(Histogram, name, documentation, labels, buckets=buckets)


def gauge(
    name: str, documentation: str, labels: Sequence[str] = (), *, multiprocess_mode: str
) -> Gauge:
    # Every gauge states how its per-process values combine under gunicorn: a live count
    # (connections) is `livesum`, so dead workers drop out (gunicorn.conf.py child_exit).
    return _define(Gauge, name, documentation, labels, multiprocess_mode=multiprocess_mode)


# Bucket sets, in seconds unless named otherwise.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
QUERY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
CHAIN_LENGTH_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)

# --- API ---------------------------------------------------------------------------
HTTP_REQUESTS = counter(
    "traversion_http_requests_total",
    "HTTP requests by method, route pattern, status code and tenant.",
    ["method", "endpoint", "status_code", "tenant_id"],
)
HTTP_REQUEST_DURATION = histogram(
    "traversion_http_request_duration_seconds",
    "HTTP request latency by method and route pattern.",
    ["method", "endpoint"],
    buckets=HTTP_BUCKETS,
)
WEBSOCKET_CONNECTIONS = gauge(
    "traversion_websocket_connections",
    "Open WebSocket connections by tenant.",
    ["tenant_id"],
    multiprocess_mode="livesum",
)
WEBSOCKET_MESSAGES = counter(
    "traversion_websocket_messages_total",
    "WebSocket messages sent by tenant and message type.",
    ["tenant_id", "message_type"],
)

# --- events ------------------------------------------------------------------------
EVENTS = counter(
    "traversion_events_total",
    "Events ingested by tenant, type and service.",
    ["tenant_id", "event_type", "service_id"],
)
EVENT_ERRORS = counter(
    "traversion_events_errors_total",
    "Events rejected or failed in processing, by tenant and error type.",
    ["tenant_id", "error_type"],
)
EVENT_PROCESSING_DURATION = histogram(
    "traversion_event_processing_duration_seconds",
    "Time to process one event (validation, storage, causality hand-off).",
    buckets=FAST_BUCKETS,
)

# --- storage -----------------------------------------------------------------------
STORAGE_OPERATION_DURATION = histogram(
    "traversion_storage_operation_duration_seconds",
    "Database operation latency by operation (select, insert, update, delete, other).",
    ["operation"],
    buckets=FAST_BUCKETS,
)

# --- queries -----------------------------------------------------------------------
QUERIES = counter(
    "traversion_queries_total",
    "API queries by tenant and query type.",
    ["tenant_id", "query_type"],
)
QUERY_DURATION = histogram(
    "traversion_query_duration_seconds",
    "API query latency by tenant and query type.",
    ["tenant_id", "query_type"],
    buckets=QUERY_BUCKETS,
)

# --- causality ---------------------------------------------------------------------
CAUSALITY_DETECTIONS = counter(
    "traversion_causality_detections_total",
    "Causal links stored, by tenant, causality type and effect service.",
    ["tenant_id", "causality_type", "service_id"],
)
CAUSALITY_CONFIDENCE = histogram(
    "traversion_causality_confidence",
    "Confidence of stored causal links (0..1).",
    buckets=CONFIDENCE_BUCKETS,
)
CAUSALITY_DETECTION_DURATION = histogram(
    "traversion_causality_detection_duration_seconds",
    "Time to score one event's candidate causes.",
    buckets=FAST_BUCKETS,
)
CAUSALITY_CHAIN_LENGTH = histogram(
    "traversion_causality_chain_length",
    "Length (links) of root-cause chains found.",
    buckets=CHAIN_LENGTH_BUCKETS,
)
ROOT_CAUSE_ANALYSIS_DURATION = histogram(
    "traversion_root_cause_analysis_duration_seconds",
    "Time to walk back from an event to its most likely root cause.",
    buckets=FAST_BUCKETS,
)
PATTERNS_DETECTED = counter(
    "traversion_patterns_detected_total",
    "New recurring (cause type, effect type, service) patterns, by tenant and pattern type.",
    ["tenant_id", "pattern_type"],
)

# --- security ----------------------------------------------------------------------
AUTH_ATTEMPTS = counter(
    "traversion_auth_attempts_total",
    "Authentication attempts by tenant (empty when unknown), method and result.",
    ["tenant_id", "method", "result"],
)
AUTH_FAILURES_BY_IP = counter(
    "traversion_auth_failures_by_ip_total",
    "Failed authentications by client IP; the top offenders by name, the rest as 'other'.",
    ["ip_address"],
)
PERMISSION_VIOLATIONS = counter(
    "traversion_permission_violations_total",
    "Requests refused by a permission check, by tenant.",
    ["tenant_id"],
)
CROSS_TENANT_ACCESS_ATTEMPTS = counter(
    "traversion_cross_tenant_access_attempts_total",
    "Requests for another tenant's objects, by the caller's tenant.",
    ["tenant_id"],
)
API_KEY_USAGE = counter(
    "traversion_api_key_usage_total",
    "Requests authenticated by an API key, by tenant.",
    ["tenant_id"],
)
JWT_ISSUED = counter(
    "traversion_jwt_issued_total", "JWT access tokens issued (obtain and refresh)."
)
JWT_VALIDATED = counter(
    "traversion_jwt_validated_total", "JWT access tokens validated successfully."
)
JWT_EXPIRED = counter("traversion_jwt_expired_total", "JWT access tokens rejected as expired.")
AUDIT_EVENTS = counter(
    "traversion_audit_events_total",
    "Audit events recorded, by tenant and action.",
    ["tenant_id", "action"],
)

# --- alerting ----------------------------------------------------------------------
ALERT_EVALUATIONS = counter(
    "traversion_alert_evaluations_total",
    "Rule evaluations by tenant and result (ok, firing, nodata, error).",
    ["tenant_id", "result"],
)
ALERT_EVALUATION_DURATION = histogram(
    "traversion_alert_evaluation_duration_seconds",
    "Time to evaluate one rule, query included.",
    buckets=QUERY_BUCKETS,
)
ALERT_NOTIFICATIONS = counter(
    "traversion_alert_notifications_total",
    "Notification deliveries by channel type and result (sent, failed, retried, suppressed).",
    ["channel_type", "result"],
)
ALERT_NOTIFICATION_DURATION = histogram(
    "traversion_alert_notification_duration_seconds",
    "Time to hand one notification to its provider, by channel type.",
    ["channel_type"],
    buckets=DELIVERY_BUCKETS,
)
CELERY_TASKS = counter(
    "traversion_celery_tasks_total",
    "Celery tasks by task name and final state (succeeded, failed, retried).",
    ["task", "state"],
)
