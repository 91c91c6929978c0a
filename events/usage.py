"""Rebuilding the per-tenant usage totals from the tables (the repair path)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Max, Sum

from tenants.models import Tenant

from .models import CausalLink, Event, EventUsage

Totals = tuple[int, int, int]


def recompute_usage() -> list[tuple[Tenant, Totals, Totals]]:
    """Recount every tenant's events, bytes and links; [(tenant, before, after)]."""
    changes = []
    for tenant in Tenant.objects.order_by("pk"):
        with transaction.atomic():
            usage, _ = EventUsage.objects.select_for_update().get_or_create(tenant=tenant)
            events = Event.objects.for_tenant(tenant).aggregate(
                count=Count("id"), size=Sum("size_bytes"), newest=Max("timestamp")
            )
            before = (usage.events_count, usage.bytes_used, usage.links_count)
            usage.events_count = events["count"]
            usage.bytes_used = events["size"] or 0
            usage.last_event_at = events["newest"]
            usage.links_count = CausalLink.objects.for_tenant(tenant).count()
            usage.save()
            changes.append(
                (tenant, before, (usage.events_count, usage.bytes_used, usage.links_count))
            )
    return changes
