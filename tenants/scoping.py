"""The one tenant-scoping path.

Querysets of tenant-owned models derive from TenantScopedQuerySet and are narrowed with
`for_tenant()`. DRF views get their tenant from `resolve_tenant()` (through
`tenants.api.permissions.TenantRolePermission`) and their queryset from
`tenants.api.views.TenantScopedViewSetMixin`; nothing else filters by tenant by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class TenantScopedQuerySet(models.QuerySet):
    #: The field that points at the owning tenant.
    tenant_field = "tenant"

    def for_tenant(self, tenant) -> TenantScopedQuerySet:
        return self.filter(**{self.tenant_field: tenant})

    def outside_tenant(self, tenant) -> TenantScopedQuerySet:
        return self.exclude(**{self.tenant_field: tenant})


@dataclass(frozen=True)
class TenantContext:
    """Who is calling, in which tenant, with which role."""

    tenant: object  # tenants.models.Tenant
    role: str


class TenantSelectionError(Exception):
    """The caller named no tenant it belongs to (status: 400 ambiguous, 403 none, 404 foreign)."""

    def __init__(self, message: str, status: int, requested: str | None = None):
        super().__init__(message)
        self.status = status
        self.requested = requested


TENANT_HEADER = "HTTP_X_TENANT"
TENANT_QUERY_PARAM = "tenant"


def requested_tenant_slug(request) -> str | None:
    slug = request.META.get(TENANT_HEADER) or request.GET.get(TENANT_QUERY_PARAM)
    return slug.strip() if slug else None


def resolve_tenant(request) -> TenantContext:
    """Pick the caller's tenant: the API key's, or the user's (chosen by X-Tenant/?tenant=)."""
    from .choices import Role
    from .models import ApiKey, Membership, Tenant

    requested = requested_tenant_slug(request)
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        if requested and requested != auth.tenant.slug:
            raise TenantSelectionError("tenant not found", 404, requested)
        return TenantContext(auth.tenant, auth.role)

    user = request.user
    memberships = Membership.objects.filter(user=user, tenant__is_active=True).select_related(
        "tenant"
    )
    if requested:
        membership = memberships.filter(tenant__slug=requested).first()
        if membership is not None:
            return TenantContext(membership.tenant, membership.role)
        if user.is_superuser:
            tenant = Tenant.objects.filter(slug=requested).first()
            if tenant is not None:
                return TenantContext(tenant, Role.OWNER)
        raise TenantSelectionError("tenant not found", 404, requested)
    found = list(memberships[:2])
    if len(found) == 1:
        return TenantContext(found[0].tenant, found[0].role)
    if found or user.is_superuser:
        raise TenantSelectionError(
            "several tenants are available: choose one with the X-Tenant header or ?tenant=", 400
        )
    raise TenantSelectionError("you are not a member of any tenant", 403)
