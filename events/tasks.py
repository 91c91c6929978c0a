"""Celery tasks of the events app: thin wrappers that take ids and call plain functions."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from .choices import PROCESS_BATCH_TASK, RETENTION_TASK, SWEEP_TASK

# Only a lost database connection is worth retrying; anything else is a bug to see.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    name=PROCESS_BATCH_TASK,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
    acks_late=True,
    ignore_result=True,
)
def process_causality_batch(batch_id: int) -> int:
    """Link the events of one outbox batch to their causes; returns the links stored."""
    from .causality.outbox import process_batch

    result = process_batch(batch_id)
    return len(result.links) if result else 0


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep_causality_batches() -> int:
    """Re-send outbox batches that no worker picked up (beat, every minute)."""
    from .causality.outbox import sweep
    from .ingest import enqueue_batch

    return len(sweep(enqueue_batch))


@shared_task(
    name=RETENTION_TASK,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def enforce_retention() -> int:
    """Delete events older than EVENT_RETENTION_DAYS (beat, hourly)."""
    from .retention import enforce_retention as run

    return run()
