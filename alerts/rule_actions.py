"""What people do to rules by hand, shared by the API and the admin.

Enabling/disabling (the guide's `toggleAlertRule`) and silencing a rule for a while.
Each writes its audit event here, so the API and the admin record the same thing.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tenants import audit

from .choices import AuditAction, MatchOp
from .models import AlertRule, Silence


def set_enabled(rule: AlertRule, enabled: bool, *, request=None) -> AlertRule:
    """Enable or disable a rule; returns it fresh from the database."""
    AlertRule.objects.filter(pk=rule.pk).update(enabled=enabled, updated_at=timezone.now())
    rule.refresh_from_db()
    audit.record(
        AuditAction.RULE_TOGGLED,
        request=request,
        tenant=rule.tenant or getattr(request, "tenant", None),
        rule=rule.name,
        enabled=enabled,
    )
    return rule


def silence_rule(
    rule: AlertRule, duration: timedelta, *, user=None, request=None, comment: str = ""
) -> Silence:
    """A silence matching every alert of `rule` (alertname = its name) for `duration`.

    A tenant rule's silence belongs to its tenant; a global rule's is global, as the
    rule's alerts reach every tenant.
    """
    now = timezone.now()
    silence = Silence.objects.create(
        tenant=rule.tenant,
        matchers=[{"name": "alertname", "op": MatchOp.EQ, "value": rule.name}],
        starts_at=now,
        ends_at=now + duration,
        comment=comment or f"Rule {rule.name} silenced for {duration}",
        created_by=user,
    )
    audit.record(
        AuditAction.SILENCE_CREATED,
        request=request,
        tenant=rule.tenant,
        silence=silence.pk,
        matchers=silence.matchers,
    )
    return silence
