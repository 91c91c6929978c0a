"""The delivery entry point: claiming, recording, fallback, recovery of lost work."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from alerts.choices import DELIVER_GROUP_TASK, NotificationStatus
from alerts.delivery import (
    RECOVER_DELIVERIES_TASK,
    backoff_seconds,
    deliver_group,
    recover_deliveries,
)
from alerts.dispatch import notify
from alerts.models import Notification
from alerts.tests.delivery_helpers import (
    drain,
    fire,
    make_channel,
    make_rule,
    notifications_total,
    queued_group,
    rows_of,
)
from alerts.tests.receivers import Reply


@pytest.fixture(autouse=True)
def delivery_settings(settings):
    settings.ALERT_GROUP_WAIT = 10**9
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    settings.ALERT_DELIVERY_LEASE_SECONDS = 60


def slack_rule(tenant, url, **channel_fields):
    channel = make_channel(tenant, "slack", {"webhook_url": url}, **channel_fields)
    rule = make_rule(tenant)
    rule.channels.add(channel)
    return rule, channel


@pytest.mark.django_db(transaction=True)
def test_two_workers_on_one_group_send_it_once(tenant_a, http_receiver, celery_on_redis):
    release = threading.Event()
    slack = http_receiver(Reply(200, "ok", hold=release))
    rule, _ = slack_rule(tenant_a, slack.url)
    group = queued_group(fire(rule))
    results = {}

    def worker_a():
        try:
            results["a"] = deliver_group(group).result
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=worker_a)
    thread.start()
    try:
        assert slack.wait_for(1, timeout=30)  # A has claimed the row and is mid-send
        [row] = rows_of(group)
        assert row.status == NotificationStatus.SENDING and row.attempts == 1
        results["b"] = deliver_group(group).result  # B finds nothing to claim
    finally:
        release.set()
        thread.join(30)
    assert results == {"a": "sent", "b": "nothing"}
    assert len(slack.requests) == 1
    [row] = rows_of(group)
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 1)


@pytest.mark.django_db
def test_a_settled_group_is_never_sent_again(tenant_a, http_receiver):
    slack = http_receiver()
    rule, _ = slack_rule(tenant_a, slack.url)
    group = queued_group(fire(rule))
    assert deliver_group(group).result == "sent"
    assert deliver_group(group).result == "nothing"  # a redelivered Celery message
    assert len(slack.requests) == 1


@pytest.mark.django_db
def test_a_disabled_channel_cancels_its_queued_rows(tenant_a, http_receiver):
    slack = http_receiver()
    rule, channel = slack_rule(tenant_a, slack.url)
    group = queued_group(fire(rule))
    channel.enabled = False
    channel.save()
    cancelled_before = notifications_total("slack", "cancelled")
    assert deliver_group(group).result == "cancelled"
    [row] = rows_of(group)
    assert row.status == NotificationStatus.FAILED
    assert row.last_error == "channel disabled before delivery"
    assert slack.requests == []
    assert notifications_total("slack", "cancelled") - cancelled_before == 1


def test_backoff_grows_exponentially_with_jitter_and_respects_retry_after(settings):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 2
    settings.ALERT_DELIVERY_BACKOFF_MAX_SECONDS = 30
    for _ in range(50):
        assert 2 <= backoff_seconds(1) <= 2.5
        assert 4 <= backoff_seconds(2) <= 5
        assert 16 <= backoff_seconds(4) <= 20
        assert 30 <= backoff_seconds(10) <= 37.5  # capped, then jittered
        assert backoff_seconds(1, retry_after=120) >= 120
        assert backoff_seconds(4, retry_after=1) >= 16
    assert len({backoff_seconds(3) for _ in range(20)}) > 1  # jitter


@pytest.mark.django_db
def test_exhausted_retries_fail_and_go_to_the_fallback(tenant_a, http_receiver):
    slack = http_receiver(default=Reply(500, "rollup_error"))
    fallback_hook = http_receiver()
    rule, channel = slack_rule(tenant_a, slack.url)
    fallback = make_channel(tenant_a, "webhook", {"url": fallback_hook.url}, is_fallback=True)
    group = queued_group(fire(rule))

    outcomes = drain(group)

    assert [o.result for o in outcomes] == ["retry", "retry", "failed"]
    [row] = rows_of(group)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == 3
    channel.refresh_from_db()
    assert channel.broken_at is None
    reroute = Notification.objects.get(fallback_for=row)
    assert reroute.channel == fallback
    assert drain(reroute.group_key)[-1].result == "sent"
    assert len(fallback_hook.requests) == 1


@pytest.mark.django_db
def test_a_failing_fallback_is_not_rerouted_again(tenant_a, http_receiver):
    slack = http_receiver(default=Reply(404, "channel_not_found"))
    broken_fallback = http_receiver(default=Reply(410, "gone"))
    rule, _ = slack_rule(tenant_a, slack.url)
    make_channel(tenant_a, "webhook", {"url": broken_fallback.url}, is_fallback=True)
    group = queued_group(fire(rule))
    [first] = drain(group)
    [second] = drain(first.fallback_group)
    assert second.result == "failed" and second.fallback_group is None
    assert Notification.objects.count() == 2
    assert set(Notification.objects.values_list("status", flat=True)) == {"failed"}


@pytest.mark.django_db
def test_no_second_row_when_the_event_already_goes_to_the_fallback(tenant_a, http_receiver):
    slack = http_receiver(default=Reply(404, "channel_not_found"))
    hook = http_receiver()
    rule, slack_channel = slack_rule(tenant_a, slack.url)
    fallback = make_channel(tenant_a, "webhook", {"url": hook.url}, is_fallback=True)
    rule.channels.add(fallback)  # the rule already notifies the fallback channel
    rows = {r.channel_id: r for r in notify(fire(rule))}
    [outcome] = drain(rows[slack_channel.pk].group_key)
    assert outcome.result == "failed" and outcome.fallback_group is None
    assert Notification.objects.filter(channel=fallback).count() == 1


@pytest.mark.django_db
def test_a_global_channel_falls_back_to_the_global_fallback(tenant_a, http_receiver):
    slack = http_receiver(default=Reply(404, "channel_not_found"))
    hook = http_receiver()
    rule = make_rule(None, name="traversion_api_down")
    channel = make_channel(None, "slack", {"webhook_url": slack.url}, name="ops")
    global_fallback = make_channel(
        None, "webhook", {"url": hook.url}, name="ops-fallback", is_fallback=True
    )
    make_channel(tenant_a, "webhook", {"url": hook.url + "/tenant"}, name="t-fb", is_fallback=True)
    rule.channels.add(channel)
    [outcome] = drain(queued_group(fire(rule), channel))
    reroute = Notification.objects.get(group_key=outcome.fallback_group)
    assert reroute.channel == global_fallback


@pytest.mark.django_db
def test_recovery_resends_a_row_whose_worker_died_mid_send_marked_as_possible_duplicate(
    tenant_a, http_receiver, django_capture_on_commit_callbacks
):
    slack = http_receiver()
    rule, _ = slack_rule(tenant_a, slack.url)
    group = queued_group(fire(rule))
    # What a worker killed mid-send leaves behind: a claimed row, one attempt counted.
    claimed_at = timezone.now() - timedelta(seconds=61)
    Notification.objects.filter(group_key=group).update(
        status=NotificationStatus.SENDING, claimed_at=claimed_at, attempts=1
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        summary = recover_deliveries()

    assert summary == {"interrupted": 1, "exhausted": 0, "lost_groups": 0, "groups": 1}
    assert len(callbacks) == 1  # the group is enqueued again once the recovery commits
    [row] = rows_of(group)
    assert row.status == NotificationStatus.QUEUED
    assert row.last_error.startswith("interrupted:")

    assert deliver_group(group).result == "sent"
    body = slack.requests[0].json()
    assert body["text"].endswith("(re-sent after an interrupted delivery; may be a duplicate)")
    row.refresh_from_db()
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)


@pytest.mark.django_db
def test_recovery_leaves_rows_within_their_lease_alone(
    tenant_a, django_capture_on_commit_callbacks
):
    rule, _ = slack_rule(tenant_a, "http://127.0.0.1:9/hook")
    group = queued_group(fire(rule))
    Notification.objects.filter(group_key=group).update(
        status=NotificationStatus.SENDING,
        claimed_at=timezone.now() - timedelta(seconds=30),
        attempts=1,
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert recover_deliveries()["groups"] == 0
    assert callbacks == []
    assert rows_of(group)[0].status == NotificationStatus.SENDING


@pytest.mark.django_db
def test_recovery_fails_an_interrupted_row_without_attempts_left(
    tenant_a, django_capture_on_commit_callbacks
):
    rule, _ = slack_rule(tenant_a, "http://127.0.0.1:9/hook")
    group = queued_group(fire(rule))
    Notification.objects.filter(group_key=group).update(
        status=NotificationStatus.SENDING,
        claimed_at=timezone.now() - timedelta(minutes=5),
        attempts=3,
    )
    failed_before = notifications_total("slack", "failed")
    with django_capture_on_commit_callbacks(execute=False):
        summary = recover_deliveries()
    assert summary["exhausted"] == 1
    [row] = rows_of(group)
    assert row.status == NotificationStatus.FAILED
    assert row.last_error.startswith("gave up after 3 attempts: interrupted:")
    assert notifications_total("slack", "failed") - failed_before == 1


@pytest.mark.django_db
def test_recovery_reenqueues_queued_rows_whose_task_was_lost(
    tenant_a, django_capture_on_commit_callbacks
):
    rule, _ = slack_rule(tenant_a, "http://127.0.0.1:9/hook")
    lost = queued_group(fire(rule, {"service": "lost"}))
    Notification.objects.filter(group_key=lost).update(
        created_at=timezone.now() - timedelta(minutes=10)
    )
    other_rule = make_rule(tenant_a, name="fresh")
    other_rule.channels.add(rule.channels.get())
    fresh = queued_group(fire(other_rule))  # its task is still on its way
    waiting_rule = make_rule(tenant_a, name="waiting")
    waiting_rule.channels.add(rule.channels.get())
    waiting = queued_group(fire(waiting_rule))  # retry scheduled in the future
    Notification.objects.filter(group_key=waiting).update(
        created_at=timezone.now() - timedelta(minutes=10),
        next_attempt_at=timezone.now() + timedelta(minutes=2),
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        summary = recover_deliveries()

    assert summary == {"interrupted": 0, "exhausted": 0, "lost_groups": 1, "groups": 1}
    assert len(callbacks) == 1
    assert fresh != lost and waiting != lost


def test_the_recovery_runs_on_beat_and_both_tasks_are_registered():
    from traversion_site.celery import app

    entry = django_settings.CELERY_BEAT_SCHEDULE["alerts-recover-deliveries"]
    assert entry["task"] == RECOVER_DELIVERIES_TASK
    assert entry["schedule"] == django_settings.ALERT_DELIVERY_RECOVERY_SECONDS
    app.loader.import_default_modules()
    assert DELIVER_GROUP_TASK in app.tasks and RECOVER_DELIVERIES_TASK in app.tasks
    task = app.tasks[DELIVER_GROUP_TASK]
    assert task.acks_late is True
    assert django_settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True


@pytest.mark.django_db
def test_a_resent_row_gets_a_fresh_retry_budget(tenant_a, http_receiver):
    from alerts.resend import resend

    slack = http_receiver(default=Reply(500, "rollup_error"))
    rule, _ = slack_rule(tenant_a, slack.url)
    group = queued_group(fire(rule))
    assert [o.result for o in drain(group)] == ["retry", "retry", "failed"]
    [row] = rows_of(group)
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 3)

    # Slack recovers after one more error: the resend retries instead of giving up.
    slack.default = Reply(200, "ok")
    slack.script(Reply(500, "rollup_error"))
    resend(row)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (NotificationStatus.QUEUED, 0)
    assert row.last_error.startswith("resent on request; was failed after 3 attempts: ")
    assert [o.result for o in drain(group)] == ["retry", "sent"]
    row.refresh_from_db()
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)
