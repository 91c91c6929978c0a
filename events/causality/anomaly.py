"""Anomaly score per (tenant, service): how unusual the current error rate is.

Errors (severity error/critical, or type error/exception) are counted per minute. The
current rate is the last complete minute; the baseline is the `BASELINE_MINUTES` minutes
before it (minutes without errors count as 0). The score is the z-score

    z = (current - mean(baseline)) / max(stdev(baseline), MIN_STDEV)

MIN_STDEV (one error per minute) keeps a flat baseline from turning one error into an
infinite score. Services without any error in the whole window have no series (z = 0).
One grouped query over the partial index of error events serves every tenant.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from metrics.labels import tenant_label
from tenants.models import Tenant

from ..models import ERROR_EVENTS, Event

BASELINE_MINUTES = 30
MIN_STDEV = 1.0


def anomaly_scores(now: datetime | None = None) -> list[tuple[tuple[str, str], float]]:
    """[((tenant label, service id), z-score)] for every service with recent errors."""
    now = now or timezone.now()
    current = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    start = current - timedelta(minutes=BASELINE_MINUTES)
    rows = (
        Event.objects.filter(
            ERROR_EVENTS, timestamp__gte=start, timestamp__lt=current + timedelta(minutes=1)
        )
        .annotate(minute=TruncMinute("timestamp"))
        .values("tenant_id", "service_id", "minute")
        .annotate(n=Count("id"))
        .values_list("tenant_id", "service_id", "minute", "n")
    )
    per_series: dict[tuple[int, str], dict[datetime, int]] = defaultdict(dict)
    for tenant_id, service_id, minute, count in rows:
        per_series[(tenant_id, service_id)][minute] = count
    tenants = Tenant.objects.in_bulk({tenant_id for tenant_id, _ in per_series})
    scores = []
    for (tenant_id, service_id), counts in sorted(per_series.items()):
        baseline = [counts.get(start + timedelta(minutes=i), 0) for i in range(BASELINE_MINUTES)]
        mean = sum(baseline) / BASELINE_MINUTES
        stdev = math.sqrt(sum((x - mean) ** 2 for x in baseline) / BASELINE_MINUTES)
        z = (counts.get(current, 0) - mean) / max(stdev, MIN_STDEV)
        scores.append(((tenant_label(tenants[tenant_id]), service_id), z))
    return scores
