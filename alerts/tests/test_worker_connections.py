"""A worker keeps its database connection between tasks, and replaces one that died.

Celery's Django fix-up would close the connection around every task; the worker keeps
it (DATABASE_WORKER_CONN_MAX_AGE) so that the connection set-up is not paid per task. A connection PostgreSQL terminated (a restart,
a failover, an administrator) must not fail more than the task that found it dead.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from alerts.models import AlertRule

from .engine_helpers import make_rule

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def worker_backends() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return {row[0] for row in cursor.fetchall()}


def evaluate_through(worker, rule) -> None:
    """Send `alerts.evaluate_rule` through Redis and wait until the worker has run it."""
    from alerts.tasks import evaluate_rule_task

    before = AlertRule.objects.get(pk=rule.pk).last_evaluated_at
    evaluate_rule_task.delay(rule.pk)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if AlertRule.objects.get(pk=rule.pk).last_evaluated_at != before:
            return
        time.sleep(0.1)
    raise AssertionError(f"the worker did not evaluate the rule\n{worker.output()[-4000:]}")


def test_the_worker_reuses_its_connection_and_survives_a_terminated_one(tenant_a, celery_worker):
    rule = make_rule(
        tenant_a,
        query="SELECT count(*) AS value FROM events WHERE timestamp > now() - interval '1 minute'",
    )
    worker = celery_worker()
    worker.wait_ready()

    evaluate_through(worker, rule)
    first = worker_backends()
    assert len(first) == 1, first
    for _ in range(3):
        evaluate_through(worker, rule)
    assert worker_backends() == first  # the same backend served every task

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(first)]
        )
    # The next tasks run on a new connection; none is lost to the dead one for good.
    for _ in range(2):
        evaluate_through(worker, rule)
    second = worker_backends()
    assert len(second) == 1 and second != first
    assert AlertRule.objects.get(pk=rule.pk).health == "ok"
