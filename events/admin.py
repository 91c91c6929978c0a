"""Read-only admin for events and causal links (scoped to the staff user's tenants).

Events are telemetry: they are written by the API and removed by retention, which keeps
the tenant's usage totals exact; the admin only shows them.
"""

from __future__ import annotations

from django.contrib import admin

from tenants.admin import TenantScopedAdminMixin

from .models import CausalLink, CausalPattern, Event


class ReadOnlyAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["timestamp", "tenant", "service_id", "event_type", "severity", "message"]
    # Cheap on a large table: a choices filter and exact-match searches that use indexes.
    # (A tenant filter would list every tenant to a tenant's staff.)
    list_filter = ["severity"]
    search_fields = ["=service_id", "=event_type", "=correlation_id", "=trace_id"]
    list_select_related = ["tenant"]
    show_full_result_count = False  # COUNT(*) of a large table on every page is waste


@admin.register(CausalLink)
class CausalLinkAdmin(ReadOnlyAdmin):
    list_display = ["detected_at", "tenant", "cause", "effect", "causality_type", "confidence"]
    list_filter = ["causality_type"]
    list_select_related = ["tenant", "cause", "effect"]
    raw_id_fields = ["cause", "effect"]
    show_full_result_count = False


@admin.register(CausalPattern)
class CausalPatternAdmin(ReadOnlyAdmin):
    list_display = [
        "tenant",
        "cause_type",
        "effect_type",
        "service_id",
        "causality_type",
        "occurrences",
        "window_start",
        "detected_at",
    ]
    list_filter = ["causality_type", ("detected_at", admin.EmptyFieldListFilter)]
