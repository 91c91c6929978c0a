"""The outbox between ingestion and the engine: claim a batch, process it, delete it.

A batch is claimed with a conditional UPDATE (one worker wins, the row count says
which), processed, then deleted. A claim older than CLAIM_LEASE is considered lost (the
worker died) and can be taken again; a batch that failed MAX_ATTEMPTS times is dropped
and counted as a causality error. The sweep re-sends batches nobody picked up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db.models import F, Q
from django.utils import timezone

from metrics.catalogue import EVENT_ERRORS
from metrics.labels import tenant_label

from ..choices import EventErrorType
from ..models import CausalityBatch
from .engine import EngineResult, process_events

logger = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=10)
#: A batch not claimed this long after it was (re-)sent is sent again by the sweep.
RESEND_AFTER = timedelta(minutes=5)
MAX_ATTEMPTS = 5
SWEEP_LIMIT = 1_000


def claim(batch_id: int, now: datetime) -> bool:
    return bool(
        CausalityBatch.objects.filter(pk=batch_id)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE))
        .update(claimed_at=now, attempts=F("attempts") + 1)
    )


def process_batch(batch_id: int) -> EngineResult | None:
    """Run the engine on one outbox batch; None when another worker has it or it is gone."""
    if not claim(batch_id, timezone.now()):
        return None
    batch = CausalityBatch.objects.select_related("tenant").get(pk=batch_id)
    if batch.attempts > MAX_ATTEMPTS:
        logger.error("dropping causality batch %s after %s attempts", batch_id, MAX_ATTEMPTS)
        EVENT_ERRORS.labels(tenant_label(batch.tenant), EventErrorType.CAUSALITY).inc(
            len(batch.event_ids)
        )
        batch.delete()
        return None
    try:
        result = process_events(batch.event_ids)
    except Exception:
        # Release the claim so that a retry need not wait for the lease to expire.
        CausalityBatch.objects.filter(pk=batch_id).update(claimed_at=None)
        EVENT_ERRORS.labels(tenant_label(batch.tenant), EventErrorType.CAUSALITY).inc(
            len(batch.event_ids)
        )
        raise
    batch.delete()
    return result


def sweep(enqueue: Callable[[int], None], now: datetime | None = None) -> list[int]:
    """Re-send batches never picked up, or whose claim expired; returns their ids."""
    now = now or timezone.now()
    stale = list(
        CausalityBatch.objects.filter(
            Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE),
            enqueued_at__lt=now - RESEND_AFTER,
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    if stale:
        CausalityBatch.objects.filter(pk__in=stale).update(enqueued_at=now)
        for batch_id in stale:
            enqueue(batch_id)
        logger.warning("re-sent %s causality batches", len(stale))
    return stale
