"""Delivery through a real Celery worker on Redis: the task's retries and Retry-After."""

from __future__ import annotations

import time

import pytest

from alerts.choices import NotificationStatus
from alerts.models import Notification
from alerts.tests.delivery_helpers import fire, make_channel, make_rule, queued_group, rows_of
from alerts.tests.receivers import Reply

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def wait_until(predicate, timeout: float = 90, what: str = "") -> None:
    """Poll until true; a deadline only to fail a broken run, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def settled(group: str) -> bool:
    return not Notification.objects.filter(
        group_key=group, status__in=[NotificationStatus.QUEUED, NotificationStatus.SENDING]
    ).exists()


def test_worker_retries_500s_then_delivers_once_and_honours_retry_after(
    tenant_a, http_receiver, celery_worker, settings
):
    settings.ALERT_GROUP_WAIT = 0  # enqueue at once; every event is its own group
    flaky = http_receiver(Reply(500, "rollup_error"), Reply(500), Reply(500), Reply(200, "ok"))
    limited = http_receiver(
        Reply(429, "rate_limited", headers={"Retry-After": "2"}), Reply(200, "ok")
    )
    rule = make_rule(tenant_a)
    flaky_channel = make_channel(tenant_a, "slack", {"webhook_url": flaky.url + "/a"})
    limited_channel = make_channel(tenant_a, "slack", {"webhook_url": limited.url + "/b"})
    rule.channels.add(flaky_channel, limited_channel)
    worker = celery_worker(ALERT_DELIVERY_BACKOFF_SECONDS="0.2", ALERT_DELIVERY_MAX_ATTEMPTS="6")

    event = fire(rule)
    # notify() writes one row per channel and, on commit, enqueues one task per group.
    flaky_group = queued_group(event, flaky_channel)
    limited_group = Notification.objects.get(event=event, channel=limited_channel).group_key

    wait_until(lambda: settled(flaky_group) and settled(limited_group), what=worker.output)

    [flaky_row] = rows_of(flaky_group)
    assert (flaky_row.status, flaky_row.attempts) == (NotificationStatus.SENT, 4)
    assert len(flaky.requests) == 4
    assert len(flaky.accepted) == 1  # exactly one message reached the channel

    [limited_row] = rows_of(limited_group)
    assert (limited_row.status, limited_row.attempts) == (NotificationStatus.SENT, 2)
    assert len(limited.requests) == 2
    # The retry came no earlier than Retry-After (a lower bound, never an upper one).
    assert limited.requests[1].at - limited.requests[0].at >= 2.0
