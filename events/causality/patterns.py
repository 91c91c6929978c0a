"""Recurring causes: a (cause type, effect type, effect service) link seen N times.

Each key has a CausalPattern row counting its links in a tumbling window of event time:
the window starts at the effect time of the first link counted, and restarts when a link
arrives more than `pattern_window_seconds` after that start. The key becomes a pattern
the first time the count reaches `pattern_min_occurrences` (`detected_at` is set) and is
counted once in traversion_patterns_detected_total (pattern_type = its causality type).

The counts are kept incrementally, so a batch costs one locking read and one update of
the keys it touched, whatever the size of the link table.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import NamedTuple

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from metrics.catalogue import PATTERNS_DETECTED

from ..models import CausalPattern
from .scoring import CausalityParams


class LinkKey(NamedTuple):
    cause_type: str
    effect_type: str
    service_id: str
    causality_type: str
    effect_at: datetime


def detect_patterns(
    tenant_id: int, tenant_label: str, links: list[LinkKey], params: CausalityParams
) -> list[CausalPattern]:
    """Count the new links per key; returns the keys that just became patterns."""
    counts: dict[tuple[str, str, str], list] = {}
    for link in sorted(links, key=lambda link: link.effect_at):
        key = (link.cause_type, link.effect_type, link.service_id)
        if key in counts:
            counts[key][0] += 1
            counts[key][2] = link.effect_at
        else:
            counts[key] = [1, link.effect_at, link.effect_at, link.causality_type]
    if not counts:
        return []
    window = timedelta(seconds=params.pattern_window_seconds)
    now = timezone.now()
    keys = sorted(counts)
    matching = reduce(or_, (Q(cause_type=c, effect_type=e, service_id=s) for c, e, s in keys))
    with transaction.atomic():
        # Rows are created in key order and locked in primary-key order: two workers
        # counting overlapping keys wait for each other instead of deadlocking.
        CausalPattern.objects.bulk_create(
            [
                CausalPattern(
                    tenant_id=tenant_id,
                    cause_type=c,
                    effect_type=e,
                    service_id=s,
                    causality_type=counts[(c, e, s)][3],
                    window_start=counts[(c, e, s)][1],
                )
                for c, e, s in keys
            ],
            ignore_conflicts=True,
        )
        rows = list(
            CausalPattern.objects.select_for_update()
            .filter(matching, tenant_id=tenant_id)
            .order_by("pk")
        )
        detected = []
        for row in rows:
            count, first, last, _ = counts[(row.cause_type, row.effect_type, row.service_id)]
            if last - row.window_start > window:
                row.window_start, row.occurrences = first, count
            else:
                row.occurrences += count
            if row.detected_at is None and row.occurrences >= params.pattern_min_occurrences:
                row.detected_at = now
                detected.append(row)
        CausalPattern.objects.bulk_update(rows, ["window_start", "occurrences", "detected_at"])
    for pattern in detected:
        PATTERNS_DETECTED.labels(tenant_label, pattern.causality_type).inc()
    return detected
