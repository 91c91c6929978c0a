"""Which rules are due, and claiming them so that each slot is evaluated once.

A rule is due when `next_evaluation_at <= now` (or it was never evaluated). The tick
claims due rules with a conditional UPDATE that moves `next_evaluation_at` on only if
it still holds the value the tick read (compare-and-set, `RETURNING id`): when two ticks
(two beats, two workers) race for the same slot, the database gives each rule to one of
them. Rules that share a slot and an interval are claimed with one statement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F, Q

from alerts.models import AlertRule

#: At most this many rules are claimed by one tick; the next tick takes the rest.
MAX_RULES_PER_TICK = 50_000
#: Rules per evaluation task (one tenant's rules are split into batches of this size).
BATCH_SIZE = 200
CLAIM_CHUNK = 1_000


@dataclass(frozen=True)
class Due:
    """A due rule: the slot it was read with, and (once claimed) its next slot."""

    rule_id: int
    tenant_id: int | None
    slot: datetime | None
    interval_ms: int
    next_slot: datetime | None = None


def _unpolled() -> list[str]:
    from . import DATASOURCES

    return [name for name, source in DATASOURCES.items() if not source.polled]


def due_rules(now: datetime, limit: int = MAX_RULES_PER_TICK) -> list[Due]:
    rows = (
        AlertRule.objects.filter(enabled=True)
        .exclude(datasource__in=_unpolled())
        .filter(Q(next_evaluation_at__lte=now) | Q(next_evaluation_at__isnull=True))
        .order_by(F("next_evaluation_at").asc(nulls_first=True), "pk")
        .values_list("pk", "tenant_id", "next_evaluation_at", "evaluation_interval")[:limit]
    )
    return [
        Due(pk, tenant_id, slot, interval or settings.ALERT_CHECK_INTERVAL)
        for pk, tenant_id, slot, interval in rows
    ]


def next_slot(slot: datetime | None, interval_ms: int, now: datetime) -> datetime:
    """Keep the rule on its cadence; if it fell behind, start again from now."""
    step = timedelta(milliseconds=interval_ms)
    if slot is not None and slot + step > now:
        return slot + step
    return now + step


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def claim(due: Sequence[Due], now: datetime) -> list[Due]:
    """Compare-and-set `next_evaluation_at`; returns the rules this caller won."""
    return [item for won in claim_chunks(due, now) for item in won]


def claim_chunks(due: Sequence[Due], now: datetime) -> Iterator[list[Due]]:
    """`claim`, one statement at a time: each list is won (and committed) when yielded,
    so the tick can send it to the workers while it claims the next one."""
    groups: dict[tuple, list[Due]] = defaultdict(list)
    for item in due:
        groups[(item.slot, item.interval_ms)].append(item)
    adapt = connection.ops.adapt_datetimefield_value
    table = connection.ops.quote_name(AlertRule._meta.db_table)
    for (slot, interval_ms), items in groups.items():
        new = next_slot(slot, interval_ms, now)
        for chunk in _chunks(items, CLAIM_CHUNK):
            placeholders = ", ".join(["%s"] * len(chunk))
            if slot is None:
                condition, slot_params = "next_evaluation_at IS NULL", []
            else:
                condition, slot_params = "next_evaluation_at = %s", [adapt(slot)]
            sql = (
                f"UPDATE {table} SET next_evaluation_at = %s "
                f"WHERE id IN ({placeholders}) AND enabled = %s AND {condition} RETURNING id"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [adapt(new), *(d.rule_id for d in chunk), True, *slot_params])
                won = {row[0] for row in cursor.fetchall()}
            yield [replace(d, next_slot=new) for d in chunk if d.rule_id in won]


def batches(claimed: Sequence[Due]) -> Iterator[tuple[int | None, list[Due]]]:
    """Claimed rules per tenant (global rules together), in batches of BATCH_SIZE."""
    by_tenant: dict[int | None, list[Due]] = defaultdict(list)
    for item in claimed:
        by_tenant[item.tenant_id].append(item)
    for tenant_id, items in by_tenant.items():
        for chunk in _chunks(items, BATCH_SIZE):
            yield tenant_id, list(chunk)
