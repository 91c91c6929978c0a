"""Test firing (guide §Troubleshooting, `POST /api/internal/alerts/test`; the admin action).

`fire_test(rule, test_data)` evaluates the rule's condition on `test_data` instead of
querying its datasource, renders exactly what each channel would receive, and, unless it
is a dry run or the condition does not hold, records a history event marked as a test and
hands it to `alerts.dispatch.notify` like any other event: the ledger rows go out through
the same delivery path, and every transport marks the message `[TEST]`. Test events are
grouped by event, so they are delivered at once, never merged with real alerts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from .choices import InstanceState, NotificationKind, Operator
from .models import AlertEvent, AlertRule, Notification, NotificationChannel

#: Keys of testData read as the value, in order, before "the first numeric field".
VALUE_KEYS = ("value",)


@dataclass
class RenderedNotification:
    channel: NotificationChannel
    payload: Any
    status: str  # queued / suppressed_* (sent for real), rendered (dry run), not_sent
    notification_id: int | None = None


@dataclass
class FiringTestResult:
    rule: AlertRule
    value: float | None
    labels: dict
    annotations: dict
    condition_met: bool
    dry_run: bool
    sent: bool
    event: AlertEvent | None = None
    notifications: list[RenderedNotification] = field(default_factory=list)


def find_rule(tenant, name: str) -> AlertRule:
    """The tenant's rule of that name, else the global one; DoesNotExist otherwise."""
    rules = {r.tenant_id: r for r in AlertRule.objects.visible_to(tenant).filter(name=name)}
    rule = rules.get(getattr(tenant, "pk", None)) or rules.get(None)
    if rule is None:
        raise AlertRule.DoesNotExist(name)
    return rule


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def value_and_labels(rule: AlertRule, test_data: dict) -> tuple[float | None, dict]:
    """The value (`value`, else the first numeric field) and the labels (other scalars)."""
    value_key = next((k for k in VALUE_KEYS if _is_number(test_data.get(k))), None)
    if value_key is None:
        value_key = next((k for k, v in test_data.items() if _is_number(v)), None)
    value = float(test_data[value_key]) if value_key is not None else None
    labels = dict(rule.labels)
    for key, raw in test_data.items():
        if key == value_key or isinstance(raw, dict | list) or raw is None:
            continue
        labels[str(key)] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return value, labels


def condition_met(rule: AlertRule, value: float | None) -> bool:
    """As the engine decides it: no operator means every returned row fires."""
    if not rule.condition_operator:
        return True
    if value is None:
        return False
    from .evaluation.condition import condition_holds

    return condition_holds(rule.condition_operator, rule.threshold, value)


def satisfying_value(rule: AlertRule) -> float:
    """A value for which the rule's condition holds (used by the admin's test fire)."""
    threshold = rule.threshold if rule.threshold is not None else 1.0
    step = max(1.0, abs(threshold) * 0.1)
    return {
        Operator.GT: threshold + step,
        Operator.LT: threshold - step,
        Operator.NE: threshold + step,
    }.get(rule.condition_operator, threshold)


def recipients(rule: AlertRule, tenant, *, operator: bool = False) -> list[NotificationChannel]:
    """The channels a test of `rule` goes to, for a caller in `tenant`.

    A tenant's rule: its own enabled channels. A global rule: the channels its alerts for
    this tenant would reach, i.e. the tenant's own enabled channels; the operators' global
    channels only when an operator asks, so that no tenant can page the platform on-call.
    """
    own = list(rule.channels.filter(enabled=True))
    if rule.tenant_id is not None:
        return own
    chosen = {c.pk: c for c in own} if operator else {}
    if tenant is not None:
        for channel in NotificationChannel.objects.for_tenant(tenant).filter(
            enabled=True, is_fallback=False
        ):
            chosen.setdefault(channel.pk, channel)
    return list(chosen.values())


def render(rows: list[Notification]) -> list[RenderedNotification]:
    """Each row as its transport would send it, secrets masked."""
    from .channels import get_transport
    from .channels.base import AlertMessage

    rendered = []
    for row in rows:
        transport = get_transport(row.channel.type)
        transport = transport() if isinstance(transport, type) else transport
        payload = transport.render(AlertMessage.from_notifications([row]))
        rendered.append(RenderedNotification(row.channel, payload, row.status, row.pk))
    return rendered


def fire_test(
    rule: AlertRule,
    test_data: dict,
    *,
    tenant=None,
    actor: str = "",
    dry_run: bool = False,
    operator: bool = False,
) -> FiringTestResult:
    """Evaluate `rule` on `test_data`; render per channel; send as [TEST] unless dry."""
    from .dispatch import notify
    from .templating import render_annotations

    value, labels = value_and_labels(rule, test_data)
    met = condition_met(rule, value)
    annotations = render_annotations(rule, labels, value)
    channels = recipients(rule, tenant if tenant is not None else rule.tenant, operator=operator)
    send = met and not dry_run
    result = FiringTestResult(rule, value, labels, annotations, met, dry_run, sent=False)
    event = AlertEvent(
        rule=rule,
        tenant=rule.tenant if rule.tenant_id is not None else tenant,
        kind=NotificationKind.TEST,
        to_state=InstanceState.FIRING,
        value=value,
        labels=labels,
        annotations=annotations,
        is_test=True,
        message=f"[TEST] fired by {actor}" if actor else "[TEST]",
    )
    with transaction.atomic():
        if send:
            event.save()
            rows = notify(event, channels=channels)
            result.event, result.sent = event, True
            result.notifications = render(rows)
            return result
        # Nothing is kept: the rows exist only long enough to be rendered exactly as a
        # real send would render them, then the savepoint (and its on-commit delivery
        # hooks) is rolled back.
        with transaction.atomic():
            event.save()
            rows = notify(event, channels=channels)
            result.notifications = render(rows)
            transaction.set_rollback(True)
    status = "rendered" if dry_run else "not_sent"
    for item in result.notifications:
        item.status, item.notification_id = status, None
    return result
