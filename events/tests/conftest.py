"""Helpers for the events tests: posting events, and the scripted incident."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from metrics.labels import tenant_label

EVENTS_URL = "/api/v1/events"


def sample(name: str, labels: dict | None = None) -> float:
    """Current value of a sample in the default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def label(tenant) -> str:
    """The `tenant_id` label value of a tenant, as every family spells it."""
    return tenant_label(tenant)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(service: str, event_type: str, at: datetime, **extra) -> dict:
    return {
        "timestamp": iso(at),
        "service_id": service,
        "event_type": event_type,
        "severity": extra.pop("severity", "info"),
        "message": extra.pop("message", f"{event_type} on {service}"),
        **extra,
    }


def scripted_incident(t0: datetime) -> list[dict]:
    """Deploy -> errors -> alert on `checkout`, and unrelated noise on `search`.

    Order in the list is arrival order; every event carries its own timestamp.
    """
    seconds = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    return [
        event("search", "metric", seconds(-120), attributes={"p95_ms": 80}),
        event("search", "log", seconds(-90), message="cache warm"),
        # A plausible but older root: the deploy must beat it on proximity.
        event("checkout", "config_change", seconds(-240), message="pool size 20 -> 10"),
        event(
            "checkout",
            "deploy",
            seconds(0),
            message="deploy v2.3.1",
            attributes={"version": "2.3.1"},
        ),
        event("search", "log", seconds(10)),
        event("checkout", "error", seconds(30), severity="error", message="HTTP 500 /pay"),
        event("checkout", "error", seconds(45), severity="error", message="HTTP 500 /pay"),
        event("search", "error", seconds(50), severity="error", message="index timeout"),
        event("checkout", "exception", seconds(60), severity="error", message="KeyError: 'sku'"),
        event("checkout", "error", seconds(70), severity="error", message="HTTP 500 /cart"),
        event("search", "metric", seconds(75), attributes={"p95_ms": 85}),
        event("checkout", "error", seconds(80), severity="error", message="HTTP 500 /pay"),
        event("checkout", "error", seconds(90), severity="error", message="HTTP 500 /pay"),
        event("search", "log", seconds(100)),
        event(
            "checkout",
            "alert",
            seconds(120),
            severity="critical",
            message="checkout 5xx rate > 5%",
        ),
    ]


def other_tenant_incident(t0: datetime) -> list[dict]:
    """The second tenant, at the same times: its own deploy (10 s *before* the first
    tenant's, so a leak across tenants would win on proximity), errors and an alert."""
    seconds = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    return [
        event("checkout", "deploy", seconds(-10), message="beta deploy"),
        event("checkout", "error", seconds(35), severity="error"),
        event("checkout", "error", seconds(55), severity="error"),
        event("checkout", "alert", seconds(121), severity="critical"),
    ]


@pytest.fixture
def t0():
    # Recent enough to be inside the retention period and not in the future.
    return timezone.now().replace(microsecond=0) - timedelta(minutes=15)


@pytest.fixture
def post_events():
    def post(client, payload, *, partial: bool | None = None, **extra):
        url = EVENTS_URL if partial is None else f"{EVENTS_URL}?partial={str(partial).lower()}"
        return client.post(url, payload, format="json", **extra)

    return post
