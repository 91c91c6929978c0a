"""Celery tasks of the alert engine: thin wrappers that take ids and call plain functions.

- `alerts.tick` (beat, every ALERT_TICK_SECONDS): claims the due rules and fans them out
  per tenant as `alerts.evaluate_rules` tasks. A task that is still queued when its
  rules' next slot arrives has expired: that slot is skipped, the next one is not.
- `alerts.evaluate_rules(tenant_id, rule_ids)`: one batch of one tenant's rules.
- `alerts.evaluate_rule(rule_id)`: one rule now (after a rule is created or enabled).
- `alerts.purge_history` (beat, hourly): history older than ALERT_HISTORY_RETENTION_DAYS.

Evaluation failures are states (the rule's `error` health), not task failures, so the
evaluation tasks are never retried: the next slot is the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .choices import InstanceState
from .evaluation.runner import evaluate_rules
from .evaluation.scheduling import Due, batches, claim_chunks, due_rules
from .models import AlertEvent, AlertInstance

logger = logging.getLogger(__name__)

TICK_TASK = "alerts.tick"
EVALUATE_RULES_TASK = "alerts.evaluate_rules"
EVALUATE_RULE_TASK = "alerts.evaluate_rule"
PURGE_HISTORY_TASK = "alerts.purge_history"
#: Rows deleted per statement by the retention task.
PURGE_CHUNK = 5_000
HISTORY_PURGE_INTERVAL_SECONDS = 3_600

Enqueue = Callable[[int | None, list[Due]], None]


def send_batch(tenant_id: int | None, batch: list[Due]) -> None:
    expires = min((d.next_slot for d in batch if d.next_slot is not None), default=None)
    evaluate_rules_task.apply_async(args=[tenant_id, [d.rule_id for d in batch]], expires=expires)


def run_tick(now: datetime | None = None, enqueue: Enqueue | None = None) -> list[Due]:
    """Claim the due rules and hand them out per tenant; returns what this tick claimed."""
    now = now or timezone.now()
    enqueue = enqueue or send_batch
    claimed: list[Due] = []
    # Each claimed chunk goes out at once: the workers start while the tick claims on.
    for won in claim_chunks(due_rules(now), now):
        claimed += won
        for tenant_id, batch in batches(won):
            enqueue(tenant_id, batch)
    if claimed:
        logger.debug("tick claimed %d rules", len(claimed))
    return claimed


def purge_history(now: datetime | None = None) -> dict[str, int]:
    """Delete history (and its ledger rows) and long-inactive instances past retention."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.ALERT_HISTORY_RETENTION_DAYS)
    deleted = {"events": 0, "instances": 0}
    targets = (
        ("events", AlertEvent.objects.filter(timestamp__lt=cutoff)),
        (
            "instances",
            AlertInstance.objects.filter(
                state__in=(InstanceState.INACTIVE, InstanceState.RESOLVED),
                last_state_change_at__lt=cutoff,
            ),
        ),
    )
    for name, queryset in targets:
        while True:
            ids = list(queryset.values_list("pk", flat=True)[:PURGE_CHUNK])
            if not ids:
                break
            queryset.model.objects.filter(pk__in=ids).delete()
            deleted[name] += len(ids)
    if any(deleted.values()):
        logger.info("purged alert history older than %s: %s", cutoff, deleted)
    return deleted


@shared_task(name=TICK_TASK, ignore_result=True)
def tick() -> int:
    return len(run_tick())


@shared_task(name=EVALUATE_RULES_TASK, ignore_result=True)
def evaluate_rules_task(tenant_id: int | None, rule_ids: list[int]) -> int:
    # tenant_id is the fan-out key (visible in the worker's log and in flower), not a filter.
    return len(evaluate_rules(rule_ids))


@shared_task(name=EVALUATE_RULE_TASK, ignore_result=True)
def evaluate_rule_task(rule_id: int) -> int:
    return len(evaluate_rules([rule_id]))


@shared_task(name=PURGE_HISTORY_TASK, ignore_result=True)
def purge_history_task() -> dict[str, int]:
    return purge_history()
