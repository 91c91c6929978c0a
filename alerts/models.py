"""Alert rules, their instances, history, silences, channels and the delivery ledger.

Durations are milliseconds throughout, as in the monitoring guide and the API.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.models import Tenant
from tenants.scoping import TenantScopedQuerySet

from .channels import channel_type_choices
from .choices import (
    Datasource,
    InstanceState,
    MatchOp,
    NotificationKind,
    NotificationStatus,
    Operator,
    RuleHealth,
    Severity,
)


def fingerprint_of(rule_id: int, labels: dict) -> str:
    """Stable hash of a rule and a label set (the instance identity, PagerDuty dedup_key)."""
    canonical = json.dumps(
        {"rule": rule_id, "labels": labels}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class TenantOrGlobalQuerySet(TenantScopedQuerySet):
    """Rows owned by a tenant, plus global rows (tenant NULL) that tenants may see."""

    def visible_to(self, tenant) -> TenantOrGlobalQuerySet:
        return self.filter(Q(tenant=tenant) | Q(tenant__isnull=True))


class NotificationChannel(models.Model):
    """Where notifications go. `config` holds the type's keys, secrets included.

    Secrets (webhook URL, routing key, SMTP password, signing secret) are write-only:
    the API and the admin never show them back once saved.
    """

    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="channels",
        help_text="Empty for a global channel (operators only).",
    )
    name = models.CharField(max_length=100)
    #: Choices come from the transport registry (alerts.channels.TRANSPORTS).
    type = models.CharField(max_length=16, choices=channel_type_choices)
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    #: None: the type's default (on for PagerDuty and webhook, off for Slack and email).
    send_resolved = models.BooleanField(null=True, blank=True)
    #: The tenant's fallback: used when another channel fails permanently.
    is_fallback = models.BooleanField(default=False)
    broken_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantOrGlobalQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], name="channel_unique_name_per_tenant"
            ),
            models.UniqueConstraint(
                fields=["name"], condition=Q(tenant__isnull=True), name="channel_unique_global_name"
            ),
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(is_fallback=True),
                name="channel_one_fallback_per_tenant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class AlertRuleQuerySet(TenantOrGlobalQuerySet):
    def enabled(self) -> AlertRuleQuerySet:
        return self.filter(enabled=True)


class AlertRule(models.Model):
    """A condition on a datasource's result that pages people when it holds long enough."""

    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="Empty for a global rule: it sees every tenant's rows and groups by tenant_id.",
    )
    name = models.CharField(max_length=200)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    description = models.TextField(blank=True)
    runbook_url = models.URLField(max_length=500, blank=True)
    datasource = models.CharField(max_length=16, choices=Datasource.choices, default=Datasource.SQL)
    query = models.TextField(blank=True)
    condition_operator = models.CharField(max_length=2, choices=Operator.choices, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    for_duration = models.PositiveBigIntegerField(
        default=0, help_text="ms the condition must hold before firing"
    )
    keep_firing_for = models.PositiveBigIntegerField(
        default=0, help_text="ms to keep firing after the condition clears"
    )
    cooldown = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="ms between repeat notifications; empty = ALERT_COOLDOWN"
    )
    evaluation_interval = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1000)],
        help_text="ms between evaluations; empty = ALERT_CHECK_INTERVAL",
    )
    labels = models.JSONField(default=dict, blank=True)
    annotations = models.JSONField(
        default=dict, blank=True, help_text="summary / description templates"
    )
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="rules")
    enabled = models.BooleanField(default=True)
    #: Loaded from the default rule pack (`manage.py load_default_rules`).
    builtin = models.BooleanField(default=False, editable=False)

    # Scheduling and health, written by the engine.
    next_evaluation_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    last_evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)
    health = models.CharField(
        max_length=16, choices=RuleHealth.choices, default=RuleHealth.UNKNOWN, editable=False
    )
    last_error = models.TextField(blank=True, editable=False)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="rule_unique_name_per_tenant"),
            models.UniqueConstraint(
                fields=["name"], condition=Q(tenant__isnull=True), name="rule_unique_global_name"
            ),
            models.CheckConstraint(
                condition=Q(condition_operator="") | Q(threshold__isnull=False),
                name="rule_operator_needs_threshold",
            ),
        ]
        indexes = [models.Index(fields=["enabled", "next_evaluation_at"], name="rule_due")]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_cooldown(self) -> int:
        return self.cooldown if self.cooldown is not None else settings.ALERT_COOLDOWN

    @property
    def effective_interval(self) -> int:
        return self.evaluation_interval or settings.ALERT_CHECK_INTERVAL

    def clean(self) -> None:
        errors = {}
        if self.severity == Severity.CRITICAL and not self.runbook_url:
            errors["runbook_url"] = "A critical rule needs a runbook URL."
        if self.condition_operator and self.threshold is None:
            errors["threshold"] = "An operator needs a threshold."
        if self.datasource != Datasource.EXTERNAL and not self.query.strip():
            errors["query"] = "A query is required."
        elif "query" not in errors:
            from .evaluation import QueryError, get_datasource

            try:
                get_datasource(self.datasource).validate(
                    self.query, global_rule=self.tenant_id is None
                )
            except QueryError as exc:
                errors["query"] = str(exc)
        from .templating import validate_annotations

        try:
            validate_annotations(self.annotations)
        except ValidationError as exc:
            errors["annotations"] = exc.messages
        if errors:
            raise ValidationError(errors)


class AlertInstanceQuerySet(TenantOrGlobalQuerySet):
    pass


class AlertInstance(models.Model):
    """One (rule, label set): its current state and timestamps."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="instances")
    #: The tenant the alert concerns (a global rule's instance carries its row's tenant).
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    fingerprint = models.CharField(max_length=64)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(
        default=dict, blank=True, help_text="rendered summary / description"
    )
    state = models.CharField(
        max_length=16, choices=InstanceState.choices, default=InstanceState.INACTIVE
    )
    value = models.FloatField(null=True, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)
    firing_since = models.DateTimeField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_state_change_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    keep_firing_until = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    #: Last firing / repeat / flapping event (notified or suppressed): the next repeat of a
    #: still-firing, unacknowledged instance is due `cooldown` ms after it.
    last_alert_at = models.DateTimeField(null=True, blank=True)
    #: Whether the condition held at the last evaluation (what the flap detector compares
    #: while the visible state stays `flapping`).
    condition_met = models.BooleanField(null=True, blank=True)
    #: The last alert notification was suppressed by a silence: once no silence matches
    #: any more, the next evaluation notifies again (a `repeat` event).
    notifications_silenced = models.BooleanField(default=False)
    #: Recent state-change times (ISO strings) for flap detection.
    recent_changes = models.JSONField(default=list, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    ack_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AlertInstanceQuerySet.as_manager()

    class Meta:
        ordering = ["-last_state_change_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "fingerprint"], name="instance_unique_rule_fingerprint"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "state"], name="instance_tenant_state")]

    def __str__(self) -> str:
        return f"{self.rule.name} {self.labels} [{self.state}]"


class AlertEventQuerySet(TenantOrGlobalQuerySet):
    pass


class AlertEvent(models.Model):
    """The firing history: one row per state transition, repeat, acknowledgement or test."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    instance = models.ForeignKey(
        AlertInstance, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(
        max_length=16, choices=NotificationKind.choices, default=NotificationKind.FIRING
    )
    from_state = models.CharField(max_length=16, choices=InstanceState.choices, blank=True)
    to_state = models.CharField(max_length=16, choices=InstanceState.choices)
    value = models.FloatField(null=True, blank=True)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict, blank=True)
    is_test = models.BooleanField(default=False)
    message = models.TextField(blank=True)

    objects = AlertEventQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            models.Index(fields=["tenant", "timestamp"], name="alertevent_tenant_time"),
            models.Index(fields=["rule", "timestamp"], name="alertevent_rule_time"),
        ]

    def __str__(self) -> str:
        return f"{self.rule.name}: {self.from_state or '-'} -> {self.to_state}"


class NotificationQuerySet(TenantOrGlobalQuerySet):
    pass


class Notification(models.Model):
    """The delivery ledger: one row per (history event, channel), the proof of delivery.

    A worker claims a row with a conditional UPDATE (queued -> sending) before it calls
    the provider, so two workers never send the same row. Rows of one group share
    `group_key`; the row that carried the message is the one with status `sent`, the
    others are `grouped` and point at it through `delivered_with`.
    """

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.CASCADE, related_name="notifications"
    )
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=NotificationKind.choices)
    status = models.CharField(
        max_length=24, choices=NotificationStatus.choices, default=NotificationStatus.QUEUED
    )
    idempotency_key = models.CharField(max_length=64, unique=True)
    group_key = models.CharField(max_length=128, blank=True, db_index=True)
    delivered_with = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: Set when this row was redirected to the tenant's fallback channel.
    fallback_for = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "channel"], name="notification_unique_event_channel"
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"{self.kind} via {self.channel} [{self.status}]"


class SilenceQuerySet(TenantOrGlobalQuerySet):
    def active(self, at=None) -> SilenceQuerySet:
        at = at or timezone.now()
        return self.filter(starts_at__lte=at, ends_at__gt=at)


class Silence(models.Model):
    """Suppresses notifications of matching instances (Alertmanager matcher semantics).

    `matchers` is a list of {"name", "value", "op"} with op one of =, !=, =~, !~; all must
    match. A silence never stops evaluation or history, only notifications.
    """

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="silences"
    )
    matchers = models.JSONField(default=list)
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    comment = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SilenceQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="silence_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        parts = [f"{m.get('name')}{m.get('op', MatchOp.EQ)}{m.get('value')}" for m in self.matchers]
        return "{" + ", ".join(parts) + "}"
