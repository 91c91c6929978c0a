"""A worker SIGKILLed while a delivery is in flight; a new worker finishes the job.

The provider has received the request when the worker dies (the local receiver holds its
answer until the kill), so the attempt's outcome is unknown to the ledger: the row stays
`sending`. The recovery task (beat, every ALERT_DELIVERY_RECOVERY_SECONDS; sent here by
the test at the same pace) takes it back after the lease and a new worker sends it again.
What each provider then shows is the guarantee documented in docs/alerting.md:

- PagerDuty: two requests with the same dedup_key, i.e. one alert (exactly once).
- Webhook: two requests with the same X-Traversion-Idempotency-Key: one message for a
  receiver that honours the key (at-least-once delivery).
- Slack and email: at-least-once; the re-sent copy says it may be a duplicate (Slack) or
  carries the same Message-ID (email).
"""

from __future__ import annotations

import threading
import time

import pytest

from alerts.choices import NotificationStatus
from alerts.delivery import RECOVER_DELIVERIES_TASK
from alerts.models import Notification
from alerts.tests.delivery_helpers import fire, make_channel, make_rule, queued_group
from alerts.tests.receivers import Reply, SmtpSink

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DUPLICATE_NOTE = "(re-sent after an interrupted delivery; may be a duplicate)"


def poll(predicate, timeout: float, tick=None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if tick is not None:
            tick()
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("channel_type", ["pagerduty", "webhook", "slack", "email"])
def test_worker_killed_mid_send_then_a_new_worker_delivers(
    channel_type, tenant_a, http_receiver, celery_worker, celery_on_redis, settings
):
    settings.ALERT_GROUP_WAIT = 0
    release = threading.Event()
    worker_env = {}
    sink = None
    if channel_type == "email":
        sink = SmtpSink()
        sink.hold = release
        sink.start()
        worker_env = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(sink.port),
            "SMTP_SECURITY": "none",
        }
        config = {"to": ["oncall@example.test"]}
        received = sink.messages
    else:
        ok = Reply(202, '{"status":"success"}') if channel_type == "pagerduty" else Reply(200, "ok")
        receiver = http_receiver(Reply(ok.status, ok.body, hold=release), default=ok)
        received = receiver.requests
        config = {
            "pagerduty": {
                "routing_key": "R0123456789abcdef0123456789abcd",
                "api_url": receiver.url,
            },
            "webhook": {"url": receiver.url + "/hook", "secret": "s3cret"},
            "slack": {"webhook_url": receiver.url + "/services/T/B/x"},
        }[channel_type]
    try:
        channel = make_channel(tenant_a, channel_type, config)
        rule = make_rule(tenant_a)
        rule.channels.add(channel)
        event = fire(rule)

        first = celery_worker(**worker_env)
        group = queued_group(event)  # committed: the task is on Redis now
        wait_for = sink.wait_for if sink else receiver.wait_for
        assert wait_for(1, timeout=90), first.output()[-3000:]

        row = Notification.objects.get(group_key=group)
        assert (row.status, row.attempts) == (NotificationStatus.SENDING, 1)
        first.kill()  # mid-send: the provider has the request, the ledger does not know
        release.set()  # (the answer now goes to a closed socket)
        row.refresh_from_db()
        assert row.status == NotificationStatus.SENDING

        second = celery_worker(ALERT_DELIVERY_LEASE_SECONDS="1", **worker_env)
        poll(
            lambda: Notification.objects.get(pk=row.pk).status == NotificationStatus.SENT,
            timeout=120,
            tick=lambda: celery_on_redis.send_task(RECOVER_DELIVERIES_TASK),
            what=f"redelivery\n{second.output()[-3000:]}",
        )
        second.stop()
    finally:
        release.set()
        if sink is not None:
            sink.stop()

    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT
    assert row.attempts == 2
    assert row.last_error.startswith("interrupted:")
    assert len(received) == 2  # the interrupted attempt and the re-send, nothing more

    if channel_type == "pagerduty":
        bodies = [r.json() for r in received]
        assert [b["event_action"] for b in bodies] == ["trigger", "trigger"]
        # One dedup_key: PagerDuty folds the re-send into the alert it already has.
        assert {b["dedup_key"] for b in bodies} == {event.instance.fingerprint}
        assert bodies[0] == bodies[1]
    elif channel_type == "webhook":
        keys = {r.header("X-Traversion-Idempotency-Key") for r in received}
        assert len(keys) == 1  # one message for a receiver that honours the key
        assert received[0].body == received[1].body
        assert received[0].header("X-Traversion-Redelivery") is None
        assert received[1].header("X-Traversion-Redelivery") == "true"
    elif channel_type == "slack":
        texts = [r.json()["text"] for r in received]
        assert DUPLICATE_NOTE not in texts[0]
        assert texts[1] == texts[0] + " " + DUPLICATE_NOTE
    else:
        ids = {m.message["Message-ID"] for m in received}
        assert len(ids) == 1
        assert "may be a duplicate" in received[1].message["Subject"]
