"""Events posted by services, the causal links between them, and their bookkeeping.

Table and column names are a public contract: the alert engine's SQL views `events` and
`causality` read `events_event` and `events_causallink` (`events.data` is `attributes`).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.models import Tenant
from tenants.scoping import TenantScopedQuerySet

from .choices import ERROR_EVENT_TYPES, ERROR_SEVERITIES, CausalityType, Severity

#: What counts as an error for the anomaly score (and its partial index).
ERROR_EVENTS = Q(severity__in=[str(s) for s in ERROR_SEVERITIES]) | Q(
    event_type__in=list(ERROR_EVENT_TYPES)
)


class EventQuerySet(TenantScopedQuerySet):
    pass


class Event(models.Model):
    """Something that happened in a tenant's service: a deploy, an error, an alert...

    `timestamp` is when it happened (as the service says); `ingested_at` when we stored
    it. `size_bytes` is what the event is charged against the tenant's storage quota.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    timestamp = models.DateTimeField()
    service_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.INFO)
    message = models.TextField(blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=128, blank=True)
    trace_id = models.CharField(max_length=128, blank=True)
    ingested_at = models.DateTimeField(default=timezone.now)
    size_bytes = models.PositiveIntegerField(default=0)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            # Range queries, cursor pages and retention: always inside one tenant.
            models.Index(fields=["tenant", "timestamp"], name="event_tenant_time"),
            # Causal candidates: the latest events of one (service, type) before a time.
            models.Index(
                fields=["tenant", "service_id", "event_type", "timestamp"],
                name="event_tenant_svc_type_time",
            ),
            # Causal candidates sharing a correlation id (most events carry none).
            models.Index(
                fields=["tenant", "correlation_id", "timestamp"],
                name="event_tenant_corr_time",
                condition=~Q(correlation_id=""),
            ),
            # The anomaly score counts recent errors across tenants in one query.
            models.Index(fields=["timestamp"], name="event_error_time", condition=ERROR_EVENTS),
        ]

    def __str__(self) -> str:
        return f"{self.event_type}@{self.service_id} {self.timestamp:%Y-%m-%d %H:%M:%S}"


class CausalLinkQuerySet(TenantScopedQuerySet):
    pass


class CausalLink(models.Model):
    """`cause` probably led to `effect` (same tenant, cause earlier), with a confidence 0..1."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="causal_links", db_index=False
    )
    # The unique (cause, effect) constraint indexes cause_id already.
    cause = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="effect_links", db_index=False
    )
    effect = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="cause_links")
    causality_type = models.CharField(max_length=32, choices=CausalityType.choices)
    confidence = models.FloatField()
    detected_at = models.DateTimeField(default=timezone.now)

    objects = CausalLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-detected_at"]
        constraints = [
            models.UniqueConstraint(fields=["cause", "effect"], name="causallink_unique_pair"),
            models.CheckConstraint(
                condition=Q(confidence__gte=0) & Q(confidence__lte=1),
                name="causallink_confidence_0_1",
            ),
            models.CheckConstraint(
                condition=~Q(cause=models.F("effect")), name="causallink_not_self"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "detected_at"], name="causallink_tenant_time")]

    def __str__(self) -> str:
        return f"{self.cause_id} -> {self.effect_id} ({self.causality_type} {self.confidence:.2f})"


class EventChain(models.Model):
    """A linked event's most likely root, as the engine found it when linking the event.

    Kept so that a new event's chain is one step from its causes' chains (the same
    max-product criterion as the root-cause walk, docs/causality.md). `root_id` is not a
    foreign key: retention may delete the root before the events it explains.
    """

    event = models.OneToOneField(
        Event, on_delete=models.CASCADE, primary_key=True, related_name="chain"
    )
    root_id = models.BigIntegerField()
    confidence = models.FloatField()
    length = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.event_id} <- {self.root_id} ({self.length} links, {self.confidence:.2f})"


class CausalityBatch(models.Model):
    """Events waiting for the causality engine (a transactional outbox).

    Written in the same transaction as the events, so a crash between commit and enqueue
    loses nothing: the sweep task re-enqueues batches that stayed unclaimed or whose
    claim expired. Deleted once processed.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    event_ids = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    #: Last time a task was sent for it (by ingestion, then by the sweep).
    enqueued_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"batch {self.pk} ({len(self.event_ids)} events)"


class EventUsage(models.Model):
    """Per-tenant running totals: what the quota check and the storage gauges read.

    Kept exact by the code paths that write and delete events and links (ingestion, the
    causality engine, retention) with atomic UPDATEs, so the quota check and the scrape
    never count a large table; `manage.py recompute_event_usage` rebuilds it.
    """

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, primary_key=True, related_name="event_usage"
    )
    events_count = models.BigIntegerField(default=0)
    bytes_used = models.BigIntegerField(default=0)
    links_count = models.BigIntegerField(default=0)
    last_event_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.events_count} events, {self.bytes_used} bytes"


class CausalPattern(models.Model):
    """A (cause type, effect type, effect service) key of causal links, and its count.

    Every key the engine links gets a row counting its links in a window of event time;
    the key becomes a pattern (`detected_at` set, counted once) when the count reaches
    the threshold within one window (docs/causality.md, "Patterns").
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    cause_type = models.CharField(max_length=64)
    effect_type = models.CharField(max_length=64)
    service_id = models.CharField(max_length=128)
    causality_type = models.CharField(max_length=32, choices=CausalityType.choices)
    #: Links of this key whose effect falls in the window that started at window_start.
    occurrences = models.PositiveIntegerField(default=0)
    window_start = models.DateTimeField()
    detected_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "cause_type", "effect_type", "service_id"],
                name="causalpattern_unique_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.cause_type} -> {self.effect_type} on {self.service_id}"
