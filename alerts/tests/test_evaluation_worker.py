"""A rule's whole life through a real Celery worker on the Redis broker.

The test plays beat: it sends `alerts.tick` through Redis; the worker claims the due
rule, fans it out as `alerts.evaluate_rules`, evaluates it on the test database, and
delivers the ledger rows to a local webhook receiver.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import AlertInstance, Notification
from tenants.models import AuditEvent

from .engine_helpers import history, ledger, make_channel, make_rule

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def wait_until(predicate, worker, what: str, timeout: float = 90) -> None:
    """Send a tick every 0.3 s until `predicate()` holds; the deadline only fails a
    broken run, it measures nothing."""
    from alerts.tasks import tick

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        tick.apply_async(expires=5)
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{worker.output()[-4000:]}")


def state(rule) -> str | None:
    instance = AlertInstance.objects.filter(rule=rule).first()
    return instance.state if instance else None


def test_inactive_pending_firing_resolved_with_for(tenant_a, celery_worker, http_receiver):
    receiver = http_receiver()
    hook = make_channel(tenant_a)
    hook.config = {"url": receiver.url + "/alerts"}
    hook.save()
    rule = make_rule(
        tenant_a,
        [hook],
        name="login_failures",
        query="SELECT count(*) AS value FROM auth_attempts WHERE result = 'failure' "
        "AND timestamp > now() - interval '5 minutes'",
        condition_operator=">",
        threshold=3,
        for_duration=2_000,
        evaluation_interval=1_000,
        cooldown=3_600_000,
    )
    worker = celery_worker(ALERT_GROUP_WAIT="100")
    worker.wait_ready()

    failures = [
        AuditEvent.objects.create(
            tenant=tenant_a, actor=f"u{i}", action="auth.login", method="jwt", result="failure"
        )
        for i in range(5)
    ]
    wait_until(lambda: state(rule) == "firing", worker, "firing")
    # The failures age out of the window: the condition clears.
    AuditEvent.objects.filter(pk__in=[f.pk for f in failures]).update(
        timestamp=timezone.now() - timedelta(hours=1)
    )
    wait_until(lambda: state(rule) == "resolved", worker, "resolved")
    wait_until(
        lambda: (
            not Notification.objects.filter(
                event__rule=rule, status__in=["queued", "sending"]
            ).exists()
        ),
        worker,
        "delivery",
    )

    assert history(rule) == [
        ("state", "inactive", "pending"),
        ("firing", "pending", "firing"),
        ("resolved", "firing", "resolved"),
    ]
    assert ledger(rule) == [("firing", "sent", "hook"), ("resolved", "sent", "hook")]
    instance = AlertInstance.objects.get(rule=rule)
    assert instance.value == 0
    pending, firing = (
        rule.events.filter(to_state=s).values_list("timestamp", flat=True).get()
        for s in ("pending", "firing")
    )
    assert firing - pending >= timedelta(milliseconds=2_000)
    bodies = [r.json() for r in receiver.requests]
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert {b["alerts"][0]["labels"]["alertname"] for b in bodies} == {"login_failures"}


def failing_logins(tenant, count=5):
    return [
        AuditEvent.objects.create(
            tenant=tenant, actor=f"u{i}", action="auth.login", method="jwt", result="failure"
        ).pk
        for i in range(count)
    ]


def age_out(ids):
    AuditEvent.objects.filter(pk__in=ids).update(timestamp=timezone.now() - timedelta(hours=1))


def restore(ids):
    AuditEvent.objects.filter(pk__in=ids).update(timestamp=timezone.now())


def events_of(rule, kind):
    return rule.events.filter(kind=kind).count()


def live_rule(tenant, receiver, **fields):
    hook = make_channel(tenant)
    hook.config = {"url": receiver.url + "/alerts"}
    hook.save()
    return make_rule(
        tenant,
        [hook],
        name="login_failures",
        query="SELECT count(*) AS value FROM auth_attempts WHERE result = 'failure' "
        "AND timestamp > now() - interval '5 minutes'",
        condition_operator=">",
        threshold=3,
        evaluation_interval=1_000,
        **fields,
    )


def settled(rule) -> bool:
    return not Notification.objects.filter(
        event__rule=rule, status__in=["queued", "sending"]
    ).exists()


def test_cooldown_silence_and_acknowledge_through_the_worker(
    tenant_a, users, celery_worker, http_receiver
):
    from alerts.models import Silence
    from alerts.services import acknowledge, expire_silence

    receiver = http_receiver()
    rule = live_rule(tenant_a, receiver, cooldown=3_000)
    worker = celery_worker(ALERT_GROUP_WAIT="100")
    worker.wait_ready()
    ids = failing_logins(tenant_a)

    wait_until(lambda: events_of(rule, "repeat") == 1, worker, "a repeat after the cooldown")
    silence = Silence.objects.create(
        tenant=tenant_a,
        matchers=[{"name": "alertname", "op": "=", "value": "login_failures"}],
        ends_at=timezone.now() + timedelta(hours=1),
    )
    wait_until(lambda: events_of(rule, "repeat") == 2, worker, "a silenced repeat")
    expire_silence(silence, users["admin"])  # notified again at once
    acknowledge(AlertInstance.objects.get(rule=rule), users["member"], "on it")
    age_out(ids)
    wait_until(lambda: state(rule) == "resolved", worker, "resolved")
    wait_until(lambda: settled(rule), worker, "delivery")

    assert history(rule) == [
        ("firing", "inactive", "firing"),
        ("repeat", "firing", "firing"),
        ("repeat", "firing", "firing"),
        ("repeat", "firing", "firing"),
        ("acknowledge", "firing", "firing"),
        ("resolved", "firing", "resolved"),
    ]
    assert ledger(rule) == [
        ("firing", "sent", "hook"),
        ("repeat", "sent", "hook"),
        ("repeat", "suppressed_silence", "hook"),
        ("repeat", "sent", "hook"),
        ("resolved", "sent", "hook"),
    ]
    assert [r.json()["status"] for r in receiver.requests] == [
        "firing",
        "firing",
        "firing",
        "resolved",
    ]


def test_flapping_through_the_worker(tenant_a, celery_worker, http_receiver):
    from alerts.choices import FLAP_THRESHOLD

    receiver = http_receiver()
    rule = live_rule(tenant_a, receiver, cooldown=0)
    worker = celery_worker(ALERT_GROUP_WAIT="100")
    worker.wait_ready()
    ids = failing_logins(tenant_a)
    expected = []
    for change in range(FLAP_THRESHOLD):
        if change % 2 == 0:
            wait_until(lambda: state(rule) == "firing", worker, f"change {change}")
            expected.append(("firing", "resolved" if change else "inactive", "firing"))
            age_out(ids)
        else:
            wait_until(lambda: state(rule) == "resolved", worker, f"change {change}")
            expected.append(("resolved", "firing", "resolved"))
            restore(ids)
    wait_until(lambda: state(rule) == "flapping", worker, "flapping")
    expected.append(("flapping", "resolved", "flapping"))
    age_out(ids)  # it keeps changing: recorded as changes, not as pages
    wait_until(
        lambda: AlertInstance.objects.get(rule=rule).condition_met is False, worker, "a change"
    )
    restore(ids)
    wait_until(
        lambda: AlertInstance.objects.get(rule=rule).condition_met is True, worker, "a change"
    )
    wait_until(lambda: settled(rule), worker, "delivery")

    assert history(rule) == expected
    assert ledger(rule) == [(kind, "sent", "hook") for kind, _, _ in expected]
    assert len(receiver.requests) == FLAP_THRESHOLD + 1
    assert state(rule) == "flapping"
