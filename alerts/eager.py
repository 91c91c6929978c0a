"""Evaluating the rules that read `events` as soon as a tenant's events are stored.

The tick evaluates a rule at its next slot, so an event waits up to the rule's
evaluation interval before its rule sees it. Ingestion calls `events_stored(tenant_id)`
once the batch has committed: the tenant's enabled sql rules (and the global ones)
whose query reads the `events` view are sent to `alerts.evaluate_rule` right away.

Debounced per rule with two cache keys living ALERT_EAGER_DEBOUNCE_SECONDS: the first
batch of a window evaluates the rule at once (leading edge); the first later batch of
the same window schedules one more evaluation a window later (trailing edge), so an
event is never left for the tick but a busy tenant costs at most two evaluations per
rule and window. The tick's slots are unaffected: an eager evaluation
is an extra one (the state machine locks the rule, so the two never interleave).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q

from .choices import Datasource

logger = logging.getLogger(__name__)

LEADING_KEY = "alerts:eager:{rule_id}"
TRAILING_KEY = "alerts:eager-trailing:{rule_id}"


def rules_reading_events(tenant_id: int) -> list[int]:
    """Ids of the enabled sql rules of the tenant (and global ones) that read `events`."""
    from .evaluation.base import QueryError
    from .evaluation.sql import compile_query, current_dialect
    from .models import AlertRule

    rows = (
        AlertRule.objects.filter(Q(tenant_id=tenant_id) | Q(tenant__isnull=True))
        .filter(enabled=True, datasource=Datasource.SQL, query__icontains="events")
        .values_list("pk", "tenant_id", "query")
    )
    dialect = current_dialect()
    found = []
    for pk, rule_tenant, query in rows:
        try:  # compile_query is cached per text: this is a lookup once warm
            compiled = compile_query(query, global_rule=rule_tenant is None, dialect=dialect)
        except QueryError:
            continue  # the tick records the error on the rule
        if "events" in compiled.views:
            found.append(pk)
    return found


def events_stored(tenant_id: int) -> int:
    """Schedule the evaluation of the rules that read the tenant's new events.

    Called after the ingestion transaction committed; returns how many evaluations were
    sent. Never raises: a cache or broker outage leaves the rules to the tick.
    """
    if not settings.ALERT_EAGER_EVALUATION:
        return 0
    from .tasks import evaluate_rule_task

    window = settings.ALERT_EAGER_DEBOUNCE_SECONDS
    sent = 0
    try:
        for rule_id in rules_reading_events(tenant_id):
            if cache.add(LEADING_KEY.format(rule_id=rule_id), 1, timeout=window):
                evaluate_rule_task.apply_async(args=[rule_id], expires=window * 10)
                sent += 1
            elif cache.add(TRAILING_KEY.format(rule_id=rule_id), 1, timeout=window):
                evaluate_rule_task.apply_async(
                    args=[rule_id], countdown=window, expires=window * 10
                )
                sent += 1
    except Exception:  # the events are stored; the tick evaluates the rules anyway
        logger.exception("eager evaluation of tenant %s's rules not scheduled", tenant_id)
    return sent
