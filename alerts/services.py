"""Operations on alerts that people perform (from the API, the admin or the shell).

- `acknowledge(instance, user, comment)`: someone is on it. Recorded in history (and
  told to channels that understand it, PagerDuty); repeats stop until it resolves.
- `expire_silence(silence, user)`: end a silence now. Still-firing instances whose
  notifications it suppressed are notified again at once (a `repeat` event); those that
  were silenced by a silence that simply ran out are notified at their next evaluation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from tenants import audit

from .choices import AuditAction, InstanceState, NotificationKind
from .dispatch import notify, routing_labels
from .models import AlertEvent, AlertInstance, AlertRule, Silence
from .silences import matches

#: States in which an instance can be acknowledged (not the dormant ones).
ACKNOWLEDGEABLE_STATES = (
    InstanceState.PENDING,
    InstanceState.FIRING,
    InstanceState.FLAPPING,
    InstanceState.NODATA,
    InstanceState.ERROR,
)
MAX_COMMENT_LENGTH = 2_000


def _username(user) -> str:
    return user.get_username() if user is not None and hasattr(user, "get_username") else ""


def acknowledge(
    instance: AlertInstance,
    user,
    comment: str = "",
    *,
    request=None,
    now: datetime | None = None,
) -> AlertEvent:
    """Acknowledge a live instance; returns the history event it recorded.

    Raises ValidationError when the instance is not active or already acknowledged.
    """
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_LENGTH:
        raise ValidationError(f"the comment is limited to {MAX_COMMENT_LENGTH} characters")
    now = now or timezone.now()
    with transaction.atomic():
        # The rule's row first, as the evaluation does: an evaluation in progress finishes
        # before the acknowledgement is written, and then sees it.
        rule = (
            AlertRule.objects.select_for_update(of=("self",))
            .select_related("tenant")
            .get(pk=instance.rule_id)
        )
        current = (
            AlertInstance.objects.select_for_update(of=("self",))
            .select_related("tenant")
            .get(pk=instance.pk)
        )
        current.rule = rule
        if current.state not in ACKNOWLEDGEABLE_STATES:
            raise ValidationError(
                f"only an active alert can be acknowledged; this one is {current.state}"
            )
        if current.acknowledged_at is not None:
            by = _username(current.acknowledged_by) or "someone"
            raise ValidationError(
                f"already acknowledged by {by} at {current.acknowledged_at:%Y-%m-%d %H:%M:%S}"
            )
        current.acknowledged_by = user if getattr(user, "pk", None) else None
        current.acknowledged_at = now
        current.ack_comment = comment
        current.save(update_fields=["acknowledged_by", "acknowledged_at", "ack_comment"])
        name = _username(user)
        event = AlertEvent.objects.create(
            rule=rule,
            instance=current,
            tenant=current.tenant,
            timestamp=now,
            kind=NotificationKind.ACKNOWLEDGE,
            from_state=current.state,
            to_state=current.state,
            value=current.value,
            labels=current.labels,
            annotations=current.annotations,
            message=f"acknowledged by {name or 'unknown'}" + (f": {comment}" if comment else ""),
        )
        notify(event)
        audit.record(
            AuditAction.INSTANCE_ACKNOWLEDGED,
            request=request,
            tenant=current.tenant,
            actor=name if request is None else None,
            instance=current.pk,
            rule=rule.name,
            comment=comment[:200],
        )
    for field in ("acknowledged_by", "acknowledged_at", "ack_comment"):
        setattr(instance, field, getattr(current, field))
    return event


def expire_silence(
    silence: Silence, user, *, request=None, now: datetime | None = None
) -> list[AlertEvent]:
    """End `silence` now; returns the repeat events of the instances it was holding back.

    Raises ValidationError when it has already ended.
    """
    now = now or timezone.now()
    with transaction.atomic():
        current = Silence.objects.select_for_update().get(pk=silence.pk)
        if current.ends_at <= now:
            raise ValidationError("this silence has already expired")
        if current.starts_at > now:
            # A silence that had not started: it ends before it ever applied.
            current.starts_at = now - timedelta(microseconds=1)
        current.ends_at = now
        current.save(update_fields=["starts_at", "ends_at"])
        audit.record(
            AuditAction.SILENCE_EXPIRED,
            request=request,
            tenant=current.tenant,
            actor=_username(user) if request is None else None,
            silence=current.pk,
        )
    silence.starts_at, silence.ends_at = current.starts_at, current.ends_at
    return renotify_released(current, now)


def renotify_released(silence: Silence, now: datetime | None = None) -> list[AlertEvent]:
    """Notify again the firing instances whose last alert `silence` suppressed."""
    from .evaluation.state import StateMachine

    now = now or timezone.now()
    held = AlertInstance.objects.filter(
        state=InstanceState.FIRING, notifications_silenced=True, acknowledged_at__isnull=True
    ).select_related("rule", "tenant")
    if silence.tenant_id is not None:
        held = held.filter(tenant_id=silence.tenant_id)
    wanted = {i.pk: i.rule_id for i in held if matches(silence.matchers, routing_labels(i))}
    if not wanted:
        return []
    rules = AlertRule.objects.filter(pk__in=set(wanted.values())).select_related("tenant")
    with transaction.atomic():
        machine = StateMachine(rules, now).load()
        for rule in machine.rules.values():
            for instance in list(machine.instances[rule.pk].values()):
                if instance.pk in wanted:
                    machine.repeat_if_due(rule, instance)
        machine.flush()
    return machine.events
