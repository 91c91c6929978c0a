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
from typing import NamedTuple

from django.db import connection, transaction
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
        # A superset of the keys (cheap to express, unlike an OR of every key), narrowed
        # here; the extra rows stay locked until commit, unchanged.
        rows = [
            row
            for row in CausalPattern.objects.select_for_update()
            .filter(
                tenant_id=tenant_id,
                service_id__in={s for _, _, s in keys},
                effect_type__in={e for _, e, _ in keys},
                cause_type__in={c for c, _, _ in keys},
            )
            .order_by("pk")
            if (row.cause_type, row.effect_type, row.service_id) in counts
        ]
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
        _save_counts(rows)
    for pattern in detected:
        PATTERNS_DETECTED.labels(tenant_label, pattern.causality_type).inc()
    return detected


# One statement for every row of the batch (bulk_update's CASE per row and field costs
# more to compile than to run).
_UPDATE_SQL = """
UPDATE {table} AS p
SET occurrences = u.occurrences, window_start = u.window_start, detected_at = u.detected_at
FROM unnest(%s::bigint[], %s::integer[], %s::timestamptz[], %s::timestamptz[])
    AS u(id, occurrences, window_start, detected_at)
WHERE p.id = u.id
"""


def _save_counts(rows: list[CausalPattern]) -> None:
    if not rows:
        return
    if connection.vendor != "postgresql":
        CausalPattern.objects.bulk_update(rows, ["window_start", "occurrences", "detected_at"])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _UPDATE_SQL.format(table=CausalPattern._meta.db_table),
            [
                [row.pk for row in rows],
                [row.occurrences for row in rows],
                [row.window_start for row in rows],
                [row.detected_at for row in rows],
            ],
        )
