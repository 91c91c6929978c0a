"""Admin for tenants, memberships, API keys and the audit log.

Operators (superusers) see everything. A staff user who is owner or admin of tenants
sees only those tenants' rows, through `TenantScopedAdminMixin` (used by other apps too).
"""

from __future__ import annotations

from django.contrib import admin, messages

from .choices import Role
from .models import ApiKey, AuditEvent, Membership, Tenant


def administered_tenants(user):
    if user.is_superuser:
        return Tenant.objects.all()
    return Tenant.objects.filter(
        memberships__user=user, memberships__role__in=[Role.OWNER, Role.ADMIN]
    )


class TenantScopedAdminMixin:
    """Narrows an admin to the tenants the staff user administers."""

    tenant_field = "tenant"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.tenant_field}__in": administered_tenants(request.user)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == self.tenant_field and not request.user.is_superuser:
            kwargs["queryset"] = administered_tenants(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "storage_quota_bytes", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return (
            administered_tenants(request.user)
            if not request.user.is_superuser
            else super().get_queryset(request)
        )


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "tenant", "prefix", "role", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at", "created_by"]
    fields = ["tenant", "name", "role", *readonly_fields]
    actions = ["revoke_keys"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        key, raw_key = ApiKey.issue(obj.tenant, obj.name, role=obj.role, created_by=request.user)
        obj.pk = key.pk
        messages.warning(request, f"API key {key.name}: {raw_key}  (shown once; copy it now)")

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        revoked = sum(key.revoke() for key in queryset)
        messages.info(request, f"{revoked} key(s) revoked.")


@admin.register(AuditEvent)
class AuditEventAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["timestamp", "tenant", "action", "actor", "method", "result", "ip_address"]
    list_filter = ["action", "result", "method", "tenant"]
    search_fields = ["actor", "action", "ip_address"]
    date_hierarchy = "timestamp"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
