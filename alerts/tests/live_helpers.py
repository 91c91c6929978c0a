"""Builders for the live board tests: rules, instances, session cookies, metric samples.

The alert engine owns the state machine; these tests only need its rows and a save() of
them (what every engine transition and every acknowledgement ends with).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from alerts.choices import InstanceState
from alerts.models import AlertInstance, AlertRule, fingerprint_of

RUNBOOK = "https://runbooks.example.test/high-error-rate"
ORIGIN = b"http://127.0.0.1"


def make_rule(tenant, name: str = "traversion_high_error_rate", **fields) -> AlertRule:
    defaults = {
        "severity": "critical",
        "description": "5xx responses above 5% of requests",
        "runbook_url": RUNBOOK,
        "datasource": "external",  # no evaluation engine runs against it in these tests
    }
    defaults.update(fields)
    return AlertRule.objects.create(tenant=tenant, name=name, **defaults)


def make_instance(rule, labels: dict | None = None, state: str = InstanceState.FIRING, **fields):
    labels = labels if labels is not None else {"service": "checkout"}
    now = timezone.now()
    defaults = {
        "tenant": rule.tenant,
        "fingerprint": fingerprint_of(rule.pk, labels),
        "labels": labels,
        "annotations": {"summary": "5xx ratio is 12%"},
        "state": state,
        "value": 0.12,
        "pending_since": now,
        "firing_since": now if state == InstanceState.FIRING else None,
        "last_state_change_at": now,
    }
    defaults.update(fields)
    return AlertInstance.objects.create(rule=rule, **defaults)


def change_state(instance: AlertInstance, state: str, **fields) -> AlertInstance:
    """What a transition of the engine amounts to: new state and times, then save()."""
    now = timezone.now()
    instance.state = state
    instance.last_state_change_at = now
    if state == InstanceState.FIRING and instance.firing_since is None:
        instance.firing_since = now
    if state == InstanceState.RESOLVED:
        instance.resolved_at = now
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.save()
    return instance


def acknowledge(instance: AlertInstance, user, comment: str = "on it") -> AlertInstance:
    instance.acknowledged_by = user
    instance.acknowledged_at = timezone.now()
    instance.ack_comment = comment
    instance.save(update_fields=["acknowledged_by", "acknowledged_at", "ack_comment"])
    return instance


def session_cookie(user) -> str:
    """A logged-in session for `user` (as after the login form), as a Cookie header value."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def close_worker_connections() -> None:
    """Close the database connections of the thread that runs sync_to_async code.

    Async tests reach the ORM through that one worker thread; its persistent connections
    (CONN_MAX_AGE) would otherwise outlive the test and block dropping the test database.
    """
    await sync_to_async(connections.close_all)()


def fresh_channel_layer(settings) -> None:
    """Give the test a channel layer of its own (same configuration, new instance).

    Channels keeps one layer object per process; channels_redis ties its receive state to
    the event loop that used it, and every async test runs on a new loop. Re-assigning
    the setting makes Channels build a new layer for this test and drop it afterwards.
    """
    settings.CHANNEL_LAYERS = {
        alias: dict(config) for alias, config in settings.CHANNEL_LAYERS.items()
    }
