"""Evaluating a batch of rules: query the datasources, apply the results, count.

A batch is the claimed rules of one tenant (or the global rules). Every SQL rule of the
batch runs in one read-only sandbox, then the state machine applies every result in one
transaction (rules locked, live instances read once, value and health updates written in
bulk). If that transaction fails, the batch is retried rule by rule so one bad rule
cannot hold the others back.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from alerts.choices import RuleHealth
from alerts.models import AlertRule
from metrics.catalogue import ALERT_EVALUATION_DURATION, ALERT_EVALUATIONS
from metrics.labels import tenant_label
from tenants.models import Tenant

from . import get_datasource
from .base import QueryError, Result
from .state import StateMachine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How one rule's evaluation ended: result is ok, firing, nodata or error.

    `seconds` is the rule's whole evaluation, `query_seconds` the datasource's part.
    """

    rule_id: int
    result: str
    events: int
    seconds: float
    query_seconds: float = 0.0


def query_rules(rules: Sequence[AlertRule]) -> dict[int, Result]:
    """Each polled rule's datasource result (datasources share work within the batch)."""
    by_source: dict[str, list[AlertRule]] = defaultdict(list)
    results: dict[int, Result] = {}
    for rule in rules:
        by_source[rule.datasource].append(rule)
    for name, group in by_source.items():
        try:
            source = get_datasource(name)
        except QueryError as exc:
            results.update({rule.pk: Result(error=exc) for rule in group})
            continue
        results.update(source.evaluate_many(group))
    return results


def _apply(rules: Sequence[AlertRule], results: dict[int, Result], now: datetime) -> list[Outcome]:
    outcomes = []
    with transaction.atomic():
        machine = StateMachine(rules, now).load()
        for rule in rules:
            result = results[rule.pk]
            started = time.perf_counter()
            before = len(machine.events)
            if result.error is not None:
                machine.error(rule, str(result.error))
                label = "error"
            else:
                machine.apply(rule, result.samples or [])
                if rule.health == RuleHealth.NODATA:
                    label = "nodata"
                else:
                    label = "firing" if machine.firing_count(rule) else "ok"
            seconds = result.seconds + time.perf_counter() - started
            outcomes.append(
                Outcome(rule.pk, label, len(machine.events) - before, seconds, result.seconds)
            )
        machine.flush()
    return outcomes


def _load(rule_ids: Iterable[int]) -> list[AlertRule]:
    unpolled = _unpolled()
    rules = list(
        AlertRule.objects.filter(pk__in=list(rule_ids), enabled=True)
        .exclude(datasource__in=unpolled)
        .order_by("pk")
    )
    # A batch is one tenant's rules: its Tenant is read once and shared by them, not
    # joined and built again for every rule (select_related).
    tenants = Tenant.objects.in_bulk({rule.tenant_id for rule in rules} - {None})
    loaded = []
    for rule in rules:
        if rule.tenant_id is not None:
            if rule.tenant_id not in tenants:
                continue  # deleted since the first read (its rules go with it)
            rule.tenant = tenants[rule.tenant_id]
        loaded.append(rule)
    return loaded


def _unpolled() -> list[str]:
    from . import DATASOURCES

    return [name for name, source in DATASOURCES.items() if not source.polled]


def evaluate_rules(rule_ids: Iterable[int], now: datetime | None = None) -> list[Outcome]:
    """Evaluate the enabled, polled rules among `rule_ids` once, at `now`."""
    now = now or timezone.now()
    rules = _load(rule_ids)
    if not rules:
        return []
    results = query_rules(rules)
    try:
        outcomes = _apply(rules, results, now)
    except Exception:  # a bug or a lost connection: isolate it to the rule that has it
        logger.exception("evaluation of %d rules failed; retrying one by one", len(rules))
        outcomes = []
        for rule in _load(r.pk for r in rules):  # fresh rows: the failed pass changed them
            try:
                outcomes += _apply([rule], results, now)
            except Exception as exc:
                logger.exception("evaluation of rule %s failed", rule.pk)
                AlertRule.objects.filter(pk=rule.pk).update(
                    health=RuleHealth.ERROR,
                    last_error=f"internal error during evaluation: {type(exc).__name__}",
                    last_evaluated_at=now,
                )
                outcomes.append(Outcome(rule.pk, "error", 0, 0.0))
    by_id = {rule.pk: rule for rule in rules}
    for outcome in outcomes:
        ALERT_EVALUATIONS.labels(
            tenant_id=tenant_label(by_id[outcome.rule_id].tenant_id), result=outcome.result
        ).inc()
        ALERT_EVALUATION_DURATION.observe(outcome.seconds)
    return outcomes
