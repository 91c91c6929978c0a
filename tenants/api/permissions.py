"""Tenant-aware permission: resolves the caller's tenant and checks the role for the method."""

from __future__ import annotations

from rest_framework import exceptions, permissions

from .. import audit
from ..choices import ROLE_RANK, AuditAction, Role
from ..scoping import TenantSelectionError, resolve_tenant


def attach_tenant(request) -> None:
    """Set request.tenant and request.tenant_role, or raise the matching API error."""
    if hasattr(request, "tenant"):
        return
    try:
        context = resolve_tenant(request)
    except TenantSelectionError as exc:
        if exc.status == 404:
            audit.record(
                AuditAction.CROSS_TENANT,
                request=request,
                tenant=None,
                requested_tenant=exc.requested,
                path=request.path,
            )
            raise exceptions.NotFound(str(exc)) from exc
        if exc.status == 403:
            raise exceptions.PermissionDenied(str(exc)) from exc
        raise exceptions.ValidationError({"tenant": [str(exc)]}) from exc
    request.tenant = context.tenant
    request.tenant_role = context.role


class TenantRolePermission(permissions.BasePermission):
    """Readers need the view's `read_role`, writers its `write_role` (per action if given)."""

    message = "Your role in this tenant does not allow this."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        attach_tenant(request)
        return role_allows(request.tenant_role, required_role(request, view))


def required_role(request, view) -> str:
    per_action = getattr(view, "action_roles", {})
    action = getattr(view, "action", None)
    if action in per_action:
        return per_action[action]
    if request.method in permissions.SAFE_METHODS:
        return getattr(view, "read_role", Role.VIEWER)
    return getattr(view, "write_role", Role.MEMBER)


def role_allows(role: str, minimum: str) -> bool:
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(minimum)]
