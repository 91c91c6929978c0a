"""Retention: delete events older than EVENT_RETENTION_DAYS, in small transactions.

Each batch deletes up to `batch_size` of one tenant's oldest events (their causal links
go with them) and takes them off the tenant's usage row in the same transaction, so the
quota is freed exactly by what was deleted and the table is never locked for long.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tenants.models import Tenant

from .models import CausalityBatch, CausalLink, CausalPattern, Event, EventUsage

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5_000


def enforce_retention(
    now: datetime | None = None, *, days: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE
) -> int:
    """Delete every event older than the retention period; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.EVENT_RETENTION_DAYS if days is None else days)
    deleted = 0
    # Deliberately across tenants: retention is the operator's policy for every tenant.
    for tenant_id in Tenant.objects.values_list("pk", flat=True):
        while count := _delete_batch(tenant_id, cutoff, batch_size):
            deleted += count
    # A key not seen for the whole period is forgotten (and may be detected anew later).
    CausalPattern.objects.filter(window_start__lt=cutoff).delete()
    CausalityBatch.objects.filter(created_at__lt=cutoff).delete()
    if deleted:
        logger.info("retention deleted %s events older than %s", deleted, cutoff.isoformat())
    return deleted


def _delete_batch(tenant_id: int, cutoff: datetime, batch_size: int) -> int:
    with transaction.atomic():
        rows = list(
            Event.objects.filter(tenant_id=tenant_id, timestamp__lt=cutoff)
            .order_by("timestamp")
            .values_list("pk", "size_bytes")[:batch_size]
        )
        if not rows:
            return 0
        ids = [pk for pk, _ in rows]
        # only("id"): the collector needs the keys, not the attributes of every row.
        _, per_model = Event.objects.filter(pk__in=ids).only("id").delete()
        EventUsage.objects.filter(tenant_id=tenant_id).update(
            events_count=F("events_count") - per_model.get(Event._meta.label, 0),
            bytes_used=F("bytes_used") - sum(size for _, size in rows),
            links_count=F("links_count") - per_model.get(CausalLink._meta.label, 0),
        )
    return len(ids)
