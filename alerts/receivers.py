"""Alerts pushed by Prometheus (Alertmanager API v2) and Alertmanager (webhook v4).

Each pushed alert becomes an instance of an *external* rule: one rule per alertname per
tenant (datasource `external`, created on first sight with the tenant's enabled channels),
one instance per label set (the fingerprint of rule + labels, so repeats deduplicate).
A firing alert goes through the engine's state machine (`apply_samples`), a resolved one
(status `resolved`, or `endsAt` in the past) through `resolve_instance`; silences,
grouping, cooldown, history and the delivery ledger apply exactly as to our own rules.

Routing: a tenant API key routes every alert to its tenant (an alert whose `tenant`
label names another tenant is refused and recorded as a cross-tenant attempt); the
platform's receiver token routes by the `tenant` label (a slug), alerts without one to a
global rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from tenants.api.views import record_cross_tenant
from tenants.models import Tenant

from .choices import ACTIVE_STATES, Datasource, Severity
from .models import AlertInstance, AlertRule, NotificationChannel, fingerprint_of

logger = logging.getLogger(__name__)

TENANT_LABEL = "tenant"
#: The label of our own `traversion_*` metrics (a tenant's primary key).
TENANT_ID_LABEL = "tenant_id"
#: Annotation keys that carry a runbook link in common Prometheus rule sets.
RUNBOOK_ANNOTATIONS = ("runbook_url", "runbook")


@dataclass(frozen=True)
class Source:
    """Who pushes: a tenant (its API key), or the platform (route by the tenant label)."""

    tenant: Tenant | None
    route_by_label: bool


@dataclass(frozen=True)
class ExternalAlert:
    labels: dict
    annotations: dict
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str = ""
    status: str | None = None  # webhook only: firing | resolved

    @classmethod
    def from_v2(cls, item: dict) -> ExternalAlert:
        return cls(
            labels=dict(item["labels"]),
            annotations=dict(item.get("annotations") or {}),
            starts_at=item.get("startsAt"),
            ends_at=item.get("endsAt"),
            generator_url=item.get("generatorURL") or "",
        )

    @classmethod
    def from_webhook(cls, item: dict, payload: dict) -> ExternalAlert:
        return cls(
            labels=dict(item["labels"]),
            annotations=dict(item.get("annotations") or {}),
            starts_at=item.get("startsAt"),
            ends_at=item.get("endsAt"),
            generator_url=item.get("generatorURL") or "",
            status=item.get("status") or payload.get("status"),
        )

    @property
    def alertname(self) -> str:
        return self.labels["alertname"].strip()

    def is_resolved(self, now: datetime) -> bool:
        if self.status is not None:  # the webhook says it outright
            return self.status == "resolved"
        # Alertmanager semantics: an alert whose endsAt has passed is resolved. Prometheus
        # sends firing alerts with an endsAt a few resend intervals in the future; Go's
        # zero time (0001-01-01) means "no end".
        return self.ends_at is not None and self.ends_at.year > 1 and self.ends_at <= now

    @property
    def instance_labels(self) -> dict:
        """The labels that identify the instance (alertname is the rule's name)."""
        return {k: str(v) for k, v in self.labels.items() if k != "alertname"}

    @property
    def instance_annotations(self) -> dict:
        annotations = {k: str(v) for k, v in self.annotations.items()}
        if self.generator_url:
            annotations.setdefault("generator_url", self.generator_url)
        return annotations


@dataclass
class IngestResult:
    received: int = 0
    firing: int = 0
    resolved: int = 0
    rejected: list[dict] = field(default_factory=list)

    def reject(self, index: int, alert: ExternalAlert, reason: str) -> None:
        self.rejected.append({"index": index, "alertname": alert.alertname, "reason": reason})


class Rejected(Exception):
    """This alert cannot be taken (the message says why); the others still are."""


def named_tenant(alert: ExternalAlert) -> tuple[str, Q] | None:
    """The tenant an alert names: its `tenant` label (a slug), else the `tenant_id` label
    our own metrics carry (a primary key), as (label value, lookup); None if neither."""
    slug = alert.labels.get(TENANT_LABEL, "").strip()
    if slug:
        return slug, Q(slug=slug)
    tenant_id = alert.labels.get(TENANT_ID_LABEL, "").strip()
    if tenant_id:
        return tenant_id, Q(pk=int(tenant_id)) if tenant_id.isdigit() else Q(pk__in=[])
    return None


def tenant_for(alert: ExternalAlert, source: Source, request=None) -> Tenant | None:
    named = named_tenant(alert)
    if not source.route_by_label:
        if named is not None:
            label, lookup = named
            if not Tenant.objects.filter(lookup, pk=source.tenant.pk).exists():
                if Tenant.objects.filter(lookup).exists():
                    record_cross_tenant(request, Tenant, label)
                raise Rejected(f"the tenant label {label!r} is not this API key's tenant")
        return source.tenant
    if named is None:
        return None
    label, lookup = named
    tenant = Tenant.objects.filter(lookup, is_active=True).first()
    if tenant is None:
        raise Rejected(f"no active tenant {label!r}")
    return tenant


def default_channels(tenant: Tenant | None) -> list[NotificationChannel]:
    """A new external rule pages the owner's enabled channels (editable afterwards)."""
    scope = Q(tenant=tenant) if tenant is not None else Q(tenant__isnull=True)
    return list(NotificationChannel.objects.filter(scope, enabled=True, is_fallback=False))


def external_rule(tenant: Tenant | None, alert: ExternalAlert) -> AlertRule:
    """The external rule of (tenant, alertname), created on first sight."""
    scope = Q(tenant=tenant) if tenant is not None else Q(tenant__isnull=True)
    for _attempt in range(2):
        rule = AlertRule.objects.filter(scope, name=alert.alertname).first()
        if rule is not None:
            if rule.datasource != Datasource.EXTERNAL:
                raise Rejected(
                    f"rule {rule.name!r} is evaluated by Traversion itself "
                    f"(datasource {rule.datasource}), not pushed"
                )
            return rule
        severity = alert.labels.get("severity", "").lower()
        runbook = next(
            (alert.annotations[k] for k in RUNBOOK_ANNOTATIONS if alert.annotations.get(k)), ""
        )
        try:
            with transaction.atomic():
                rule = AlertRule.objects.create(
                    tenant=tenant,
                    name=alert.alertname,
                    datasource=Datasource.EXTERNAL,
                    severity=severity if severity in Severity.values else Severity.WARNING,
                    description=f"Alerts named {alert.alertname} pushed by Prometheus "
                    "or Alertmanager.",
                    runbook_url=runbook[:500],
                )
                rule.channels.set(default_channels(tenant))
            logger.info("external rule %s created for tenant %s", rule.name, tenant)
            return rule
        except IntegrityError:
            continue  # another push created it a moment ago: read it
    raise Rejected(f"could not create the external rule {alert.alertname!r}")


def fire(rule: AlertRule, alert: ExternalAlert, tenant: Tenant | None, now: datetime) -> None:
    from .evaluation.base import Sample
    from .evaluation.state import apply_samples

    labels = alert.instance_labels
    sample = Sample(labels=labels, value=None, tenant_id=tenant.pk if tenant else None)
    events = apply_samples(rule, [sample], now=now)
    # The engine renders the rule's (empty) annotation templates; the pushed alert's own
    # summary and description are what people need to read.
    pushed = alert.instance_annotations
    if pushed:
        fingerprint = fingerprint_of(rule.pk, labels)
        for instance in AlertInstance.objects.filter(rule=rule, fingerprint=fingerprint):
            instance.annotations = {**instance.annotations, **pushed}
            instance.save(update_fields=["annotations"])
        for event in events:
            if event.labels == labels:
                event.annotations = {**(event.annotations or {}), **pushed}
                event.save(update_fields=["annotations"])


def resolve(rule: AlertRule, alert: ExternalAlert, now: datetime) -> bool:
    from .evaluation.state import resolve_instance

    fingerprint = fingerprint_of(rule.pk, alert.instance_labels)
    instance = AlertInstance.objects.filter(
        rule=rule, fingerprint=fingerprint, state__in=ACTIVE_STATES
    ).first()
    if instance is None:
        return False
    resolve_instance(instance, now=now)
    return True


def ingest(alerts: list[ExternalAlert], source: Source, *, request=None) -> IngestResult:
    """Take a batch of pushed alerts; each one is applied (or refused) on its own."""
    now = timezone.now()
    result = IngestResult(received=len(alerts))
    for index, alert in enumerate(alerts):
        try:
            tenant = tenant_for(alert, source, request)
            with transaction.atomic():
                rule = external_rule(tenant, alert)
                if not rule.enabled:
                    raise Rejected(f"rule {rule.name!r} is disabled")
                if alert.is_resolved(now):
                    resolve(rule, alert, now)
                    result.resolved += 1
                else:
                    fire(rule, alert, tenant, now)
                    result.firing += 1
        except Rejected as exc:
            result.reject(index, alert, str(exc))
    return result
